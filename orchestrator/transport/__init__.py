"""How the service, its workers and its clients talk: one ZeroMQ endpoint, JSON messages, no broker.

    wire          envelopes, outcomes and log values as tagged JSON, checked field by field
    protocol      the messages (hello, call, done, ack, submit, reply, ...) and the checks on each
    scheduler     which worker gets which call: credit, heartbeat deadlines, acknowledgements;
                  pure, given ``now``, with no socket and no clock of its own
    hub           the service's ROUTER socket: reads and writes frames, asks the scheduler the rest
    connection    a client's DEALER socket: requests out, replies matched back by request id
    security      CURVE keys: who may connect, and encryption of everything said
    endpoints     ``tcp://HOST:PORT`` checks
    waker         a pipe that wakes a thread blocked in a ZeroMQ poll

pyzmq is imported only by ``hub``, ``connection`` and ``security`` (and by the zmq
executor's worker process in ``workers.zmq``); importing this package imports none of them.
The transport knows the core's envelopes and outcomes, never the engine, the store or the CLI.
"""
