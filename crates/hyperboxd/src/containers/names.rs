//! Container names: Docker's rules for user-given names, and `adjective_noun` names for the rest.

use std::collections::HashSet;

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "rapid", "sharp", "tidy", "upbeat", "vivid", "witty", "zesty",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "badger", "heron", "lynx", "marten", "newt", "orca", "panda", "quokka",
    "raven", "stoat", "tapir", "urchin", "vole", "walrus", "yak", "zebra", "gecko", "ibis",
];

/// Docker's name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

/// A free `adjective_noun` name (with a number when all pairs are taken).
pub fn generate(taken: &HashSet<String>) -> String {
    let seed = super::random_id();
    let n = usize::from_str_radix(&seed[..8], 16).unwrap_or(0);
    for attempt in 0..ADJECTIVES.len() * NOUNS.len() {
        let k = n.wrapping_add(attempt);
        let name = format!(
            "{}_{}",
            ADJECTIVES[k % ADJECTIVES.len()],
            NOUNS[(k / ADJECTIVES.len()) % NOUNS.len()]
        );
        if !taken.contains(&name) {
            return name;
        }
    }
    format!("{}_{}", ADJECTIVES[n % ADJECTIVES.len()], &seed[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate("web-1").is_ok());
        assert!(validate("a").is_err());
        assert!(validate("-x").is_err());
        assert!(validate("a/b").is_err());
        let mut taken = HashSet::new();
        for _ in 0..500 {
            let n = generate(&taken);
            assert!(validate(&n).is_ok());
            assert!(taken.insert(n));
        }
    }
}
