"""docker-py (the Docker SDK for Python) against hyperboxd: the API paths the docker CLI does not
exercise the same way. Usage: session.py BASE_URL IMAGE. Exits non-zero on the first mismatch.
Run by tests/docker_py.rs against a real daemon."""

import sys
import time

import docker
from docker import errors

base_url, image = sys.argv[1], sys.argv[2]
client = docker.DockerClient(base_url=base_url, version="auto", timeout=60)
api = client.api
since = int(time.time()) - 1


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


check(client.ping() is True, "ping")
check(client.version()["ApiVersion"] == "1.43", "version negotiation")
check(isinstance(client.info()["Containers"], int), "info")

# Images.
client.images.pull(image)
img = client.images.get(image)
check(img.id.startswith("sha256:") and any(t.startswith(image) for t in img.tags),
      f"images.get: id and tags {img.tags}")
check(any(i.id == img.id for i in client.images.list()), "images.list")
try:
    client.images.get("no-such-image:1")
    check(False, "ImageNotFound for a missing image")
except errors.ImageNotFound:
    check(True, "ImageNotFound for a missing image")

# A foreground run returns its output (attach + wait + logs under the hood).
out = client.containers.run(image, ["sh", "-c", "echo out; echo err >&2"], remove=True,
                            stdout=True, stderr=True, network_mode="none")
check(out == b"out\nerr\n", f"containers.run output {out!r}")
try:
    client.containers.run(image, ["sh", "-c", "exit 3"], remove=True, network_mode="none")
    check(False, "ContainerError for a non-zero exit")
except errors.ContainerError as e:
    check(e.exit_status == 3, "ContainerError carries the exit status")

# A detached container, found by filters.
c = client.containers.run(image, ["sh", "-c", "echo first; echo second; exec sleep 60"],
                          detach=True, name="py-one", labels={"team": "a"},
                          network_mode="none")
check(c.name == "py-one" and c.labels.get("team") == "a", "name and labels")
check([x.id for x in client.containers.list(filters={"label": "team=a"})] == [c.id], "label filter")
check([x.id for x in client.containers.list(filters={"name": "py-one"})] == [c.id], "name filter")
check(c.id in [x.id for x in client.containers.list(filters={"status": "running"})], "status filter")
check(client.containers.list(filters={"label": "team=b"}) == [], "label filter excludes")

# exec with stdout and stderr apart, and its exit code.
r = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 3"], demux=True)
check(r.exit_code == 3 and r.output == (b"o\n", b"e\n"), f"exec_run demux {r}")
r = c.exec_run(["sh", "-c", "echo $HOME-$FOO"], environment={"FOO": "bar"}, workdir="/tmp")
check(r.exit_code == 0 and r.output == b"/root-bar\n", f"exec_run env {r.output!r}")

# Inspection.
deadline = time.time() + 10
while b"second" not in c.logs() and time.time() < deadline:
    time.sleep(0.05)
check(c.logs() == b"first\nsecond\n", "logs")
check(c.logs(tail=1) == b"second\n", "logs tail")
check(c.logs(timestamps=True).split(b" ", 1)[0].endswith(b"Z"), "logs timestamps")
top = c.top()
check(any("sleep" in " ".join(p) for p in top["Processes"]), "top")
stats = c.stats(stream=False)
check(stats["memory_stats"].get("usage", 0) > 0, "stats memory usage")
c.reload()
check(c.status == "running" and c.attrs["State"]["Pid"] > 0, "reload / inspect")

# Lifecycle.
c.kill(signal="SIGKILL")
check(c.wait(timeout=10)["StatusCode"] == 137, "kill + wait 137")
c.reload()
check(c.status == "exited", "exited after kill")
c.start()
c.reload()
check(c.status == "running", "start again")
c.stop(timeout=1)
c.reload()
check(c.status == "exited", "stop")
c.remove()
try:
    client.containers.get("py-one")
    check(False, "NotFound after remove")
except errors.NotFound:
    check(True, "NotFound after remove")

# Errors come back as Docker's JSON, turned into the SDK's exceptions.
try:
    api.create_container(image, command=["true"], host_config={"Memory": "lots"})
    check(False, "a wrongly typed field is refused")
except errors.APIError as e:
    check(e.status_code == 400, f"wrong type -> 400 ({e.explanation})")
try:
    client.containers.run("no-such-image-here:1", "true", remove=True)
    check(False, "run of a missing image fails")
except (errors.ImageNotFound, errors.APIError):
    check(True, "run of a missing image fails")

# Events over the period, decoded.
until = int(time.time()) + 1
actions = [e["Action"] for e in client.events(since=since, until=until, decode=True,
                                               filters={"container": c.id})]
check(actions[:2] == ["create", "start"] and "destroy" in actions, f"events {actions}")

# Disk usage and prune.
df = client.df()
check(any(i["Id"] == img.id for i in df["Images"]), "df lists the image")
client.containers.create(image, ["true"], name="py-dead")
pruned = client.containers.prune()
check(any(True for _ in pruned.get("ContainersDeleted") or []), "containers.prune")
print("docker-py session passed")
