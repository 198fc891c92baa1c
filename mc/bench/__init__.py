"""``mc bench``: load generators, baseline server and runners for the benchmarks.

Everything here talks only to 127.0.0.1. Every process a benchmark starts is
a child of the runner, stopped by its PID (SIGTERM, then SIGKILL) in a
``finally`` block. Generators are lean on purpose: raw non-blocking sockets,
one epoll loop, mc's own frame codec (``encode_masked_frame`` and
``FrameParser(expect_masked=False)``), so that one Python process can drive a
worker that is much faster than a general-purpose client library.

Modules:

* :mod:`mc.bench.wsclient`  handshake and connection helpers for the generators
* :mod:`mc.bench.gen`       the generator processes (``python -m mc.bench.gen ROLE``)
* :mod:`mc.bench.baseline`  an asyncio ``websockets`` server speaking the same
                            protocol subset (``python -m mc.bench.baseline``)
* :mod:`mc.bench.procs`     starting, pinning, measuring and stopping processes
* :mod:`mc.bench.scenarios` fanout, relay, connections, master
* :mod:`mc.bench.results`   result files, tables and the plot
"""
