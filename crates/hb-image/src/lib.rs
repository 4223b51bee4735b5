//! `hb-image`: HyperBox's images. Docker-style references, pulling from OCI registries
//! (`pull`), layer ingest into the content store (`ingest`), `load`/`save` of tarballs
//! (`archive`), the catalog of images and names (`catalog`), and saved registry credentials
//! (`credentials`). It knows the store's API, never namespaces or HTTP serving.

pub mod archive;
pub mod catalog;
pub mod credentials;
mod error;
pub mod ingest;
pub mod pull;
pub mod reference;

pub use catalog::{ImageCatalog, ImageRecord, LayerRecord};
pub use error::ImageError;
pub use pull::{Platform, PullEvent, Puller, PullerConfig};
pub use reference::ImageRef;
