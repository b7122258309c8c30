"""etcd3gw (PyPI) through its README's calls against one server: corekv or etcd 3.4.

Usage: python3 etcd3gw_check.py HOST PORT

Every answer is asserted here, and a transcript with nothing server-specific in it (no lease
IDs, member IDs or lock UUIDs) is printed, one line per call: tests/etcd3gw.rs runs this
against etcd 3.4 and against corekv and requires the same transcript.
"""

import sys
import threading
import time
import queue

from etcd3gw.client import Etcd3Client

host, port = sys.argv[1], int(sys.argv[2])
client = Etcd3Client(host=host, port=port, timeout=10)


def say(*parts):
    print(*parts, flush=True)


# The API path is found through GET /version (etcd >= 3.4 -> /v3/).
say("api_path", client.api_path)

status = client.status()
assert "version" in status and "header" in status, status
say("status keys", sorted(k for k in status if k not in ("dbSize", "dbSizeInUse")))
members = client.members()
assert len(members) == 1, members
say("members", len(members), sorted(members[0].keys()))

# --- kv ---
assert client.put("foo", "bar") is True
say("put foo bar")
assert client.get("foo") == [b"bar"], client.get("foo")
say("get foo", client.get("foo"))
val, meta = client.get("foo", metadata=True)[0]
assert val == b"bar" and meta["key"] == b"foo", (val, meta)
say("get foo metadata", val, sorted(meta.items()))
assert client.get("missing") == []
say("get missing", client.get("missing"))

for i in range(3):
    assert client.put(f"dir/{i}", f"v{i}")
prefix = client.get_prefix("dir/")
assert [v for v, _ in prefix] == [b"v0", b"v1", b"v2"], prefix
say("get_prefix dir/", [(v, m["key"]) for v, m in prefix])
sorted_desc = client.get_prefix("dir/", sort_order="descend", sort_target="key")
assert [v for v, _ in sorted_desc] == [b"v2", b"v1", b"v0"], sorted_desc
say("get_prefix dir/ descend", [v for v, _ in sorted_desc])
everything = client.get_all()
say("get_all", [(v, m["key"]) for v, m in everything])

assert client.create("new", "1") is True
say("create new", True)
assert client.create("new", "2") is False
say("create new again", False)
assert client.get("new") == [b"1"]

assert client.replace("new", "1", "2") is True
say("replace new 1->2", True)
assert client.replace("new", "1", "3") is False
say("replace new 1->3", False)
assert client.get("new") == [b"2"]
say("get new", client.get("new"))

assert client.delete("new") is True
say("delete new", True)
assert client.delete("new") is False
say("delete new again", False)
assert client.get("new") == []
assert client.delete_prefix("dir/") is True
say("delete_prefix dir/", True)
assert client.get_prefix("dir/") == []

# --- leases ---
lease = client.lease(ttl=60)
assert isinstance(lease.id, int) and lease.id > 0
ttl = lease.ttl()
assert 55 <= ttl <= 60, ttl
say("lease ttl in [55, 60]")
assert lease.refresh() == 60
say("lease refresh", 60)
assert client.put("leased/a", "x", lease=lease)
assert client.put("leased/b", "y", lease=lease)
keys = sorted(lease.keys())
assert keys == [b"leased/a", b"leased/b"], keys
say("lease keys", keys)
assert lease.revoke() is True
say("lease revoke", True)
assert client.get_prefix("leased/") == []
say("leased keys after revoke", client.get_prefix("leased/"))
assert lease.ttl() == -1, lease.ttl()
say("revoked lease ttl", -1)

assert client.create("leased/c", "z", lease=client.lease(ttl=60)) is True
say("create with a lease", True)
assert client.delete("leased/c")

# --- watch ---
events, cancel = client.watch("watched")
assert client.put("watched", "w1")
ev = events.__next__()
say("watch event", ev["kv"]["key"], ev["kv"]["value"], ev.get("type", "PUT"))
assert ev["kv"]["key"] == b"watched" and ev["kv"]["value"] == b"w1", ev
assert client.delete("watched")
ev = events.__next__()
say("watch event", ev["kv"]["key"], ev.get("type"))
assert ev["kv"]["key"] == b"watched" and ev.get("type") == "DELETE", ev
cancel()
say("watch cancelled")

events, cancel = client.watch_prefix("wp/")
assert client.put("other", "o")
assert client.put("wp/1", "a")
assert client.put("wp/2", "b")
got = [events.__next__() for _ in range(2)]
say("watch_prefix events", [(e["kv"]["key"], e["kv"]["value"]) for e in got])
assert [(e["kv"]["key"], e["kv"]["value"]) for e in got] == [(b"wp/1", b"a"), (b"wp/2", b"b")]
cancel()
say("watch_prefix cancelled")

# watch_once: a put from another thread is seen.
timer = threading.Timer(0.2, lambda: client.put("once", "1"))
timer.start()
ev = client.watch_once("once", timeout=10)
timer.join()
assert ev["kv"]["key"] == b"once" and ev["kv"]["value"] == b"1", ev
say("watch_once", ev["kv"]["key"], ev["kv"]["value"])

# --- lock ---
lock = client.lock("mylock", ttl=60)
assert lock.is_acquired() is False
assert lock.acquire() is True
say("lock acquire", True)
assert lock.is_acquired() is True
say("lock is_acquired", True)
other = client.lock("mylock", ttl=60)
# The second locker does not get it while the first holds it.
assert other.acquire() is False
say("second locker acquire while held", False)
assert other.is_acquired() is False

# A second locker that retries (as a blocking locker would) gets it only after the release.
acquired = queue.Queue()
released = threading.Event()


def wait_for_lock():
    third = client.lock("mylock", ttl=60)
    while not third.acquire():
        time.sleep(0.05)  # the pace of retries, not a bound
    acquired.put((released.is_set(), third))


t = threading.Thread(target=wait_for_lock)
t.start()
try:
    acquired.get(timeout=0.5)
    raise AssertionError("the third locker got the lock while it was held")
except queue.Empty:
    pass
say("third locker waits while held")
released.set()
assert lock.release() is True
say("lock release", True)
after_release, third = acquired.get(timeout=10)
t.join()
assert after_release is True
say("third locker got it after release", after_release)
assert third.is_acquired() is True and lock.is_acquired() is False
assert lock.release() is False
say("release of a lock not held", False)
assert third.refresh() == 60
say("lock refresh", 60)
assert third.release() is True
with client.lock("ctx", ttl=60) as l:
    assert l.is_acquired()
    say("lock as a context manager", True)
assert not l.is_acquired()
assert client.get_prefix("/locks/") == []
say("no lock keys left", client.get_prefix("/locks/"))
say("done")
