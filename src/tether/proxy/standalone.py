"""`python -m tether.proxy.standalone --config FILE.json`: the engine with a static config.

Used by the benchmarks and the process-level tests; the mesh's own entry point
(`tether connect proxy`, agent-managed sidecars) feeds the same engine from the agent.

Signals: SIGTERM / SIGINT drain (stop accepting, let live connections finish for
`drain_timeout_ms`, then exit 0); SIGHUP re-reads the file and applies TLS material,
allow list and upstream instances live. A reload that fails keeps the running config
(fail static) and says so in the log.

Prints one line `READY inbound=host:port upstream.<name>=host:port admin=host:port` on
stderr once every listener is bound, so callers can wait for it instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from tether.core.errors import TetherError
from tether.proxy.authz import StaticAllowList
from tether.proxy.config import StandaloneConfig, load_config
from tether.proxy.engine import Engine

log = logging.getLogger("tether.proxy")


def _allow(cfg: StandaloneConfig) -> StaticAllowList:
    return StaticAllowList(cfg.allow, cfg.inbound.service if cfg.inbound else "")


async def serve_standalone(cfg: StandaloneConfig, path: str) -> int:
    stream = None
    if cfg.access_log_path == "-":
        stream = sys.stdout
    elif cfg.access_log_path:
        stream = open(cfg.access_log_path, "a", buffering=1 << 16)
    engine = Engine(cfg.tls.load(), authorize=_allow(cfg), access_log=stream, log_format=cfg.access_log_format,
                    handshake_timeout=cfg.handshake_timeout, idle_timeout=cfg.idle_timeout)
    ready = []
    if cfg.inbound:
        lst = await engine.open_inbound(cfg.inbound)
        ready.append(f"inbound={lst.address[0]}:{lst.address[1]}")
    for spec, instances in cfg.upstreams:
        lst = await engine.open_upstream(spec, instances)
        ready.append(f"upstream.{spec.name}={lst.address[0]}:{lst.address[1]}")
    if cfg.admin:
        host, port = await engine.open_admin(*cfg.admin)
        ready.append(f"admin={host}:{port}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(engine, path))
    # Everything allocated so far lives for the whole process: move it out of the
    # collector's way so per-connection garbage collections only scan young objects.
    gc.collect()
    gc.freeze()
    print("READY " + " ".join(ready), file=sys.stderr, flush=True)
    await stop.wait()
    cut = await engine.drain(cfg.drain_timeout)
    await engine.close()
    log.info("drained; %d connection(s) cut at the deadline", cut)
    if stream is not None and stream is not sys.stdout:
        stream.close()
    return 0


def reload(engine: Engine, path: str) -> None:
    """Apply a changed config file live; on any failure keep serving the current one."""
    try:
        cfg = load_config(path)
        material = cfg.tls.load()
        engine.update_tls(material)
        engine.update_authorizer(_allow(cfg))
        for spec, instances in cfg.upstreams:
            if spec.name in engine.upstreams:
                engine.update_upstream(spec.name, instances)
    except (TetherError, OSError) as e:
        engine.config_source_failed(f"config file {path}", str(e))
        return
    engine.config_source_ok(f"config file {path}")
    log.info("config reloaded from %s", path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tether.proxy.standalone", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON config file")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config)
        cfg.tls.load()
    except TetherError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: TLS files: {e}", file=sys.stderr)
        return 2
    run = asyncio.run
    if cfg.loop == "uvloop":
        try:
            import uvloop
            run = uvloop.run
        except ImportError:
            log.warning("uvloop is not installed; using the asyncio event loop")
    try:
        return run(serve_standalone(cfg, args.config))
    except OSError as e:  # typically a port already in use
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
