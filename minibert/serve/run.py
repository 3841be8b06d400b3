"""Running the app under uvicorn for `minibert serve`: one line when ready, and SIGTERM drains (new work
gets 503 while what is in flight finishes, within the drain time) before the process exits."""

from __future__ import annotations

import signal
import sys

from minibert.serve.app import Limits, State, create_app, drain


def serve(load, *, model_name: str, host: str, port: int, limits: Limits, api_key=None, cors_origins=None) -> int:
    """Serve the encoder `load()` returns until SIGTERM or Ctrl-C; returns the exit code."""
    import uvicorn

    from minibert.fast.cpu import features

    state = State(load=load, model_name=model_name, limits=limits, api_key=api_key, cpu=features().describe())
    config = uvicorn.Config(
        create_app(state, cors_origins),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if sig == signal.SIGTERM and state.loop is not None and not state.draining:
                # drain first: stop taking work, finish what is in flight, then shut down as uvicorn does
                def finish(task):  # what uvicorn's own handler does, less re-raising SIGTERM: a drain is a clean exit
                    self.should_exit = True

                state.loop.call_soon_threadsafe(lambda: state.loop.create_task(drain(state)).add_done_callback(finish))
                return
            super().handle_exit(sig, frame)

    server = Server(config)
    outcome = {}

    def ready(state: State) -> None:
        if state.failed:
            print(f"minibert serve: error: {state.failed}", file=sys.stderr, flush=True)
            outcome["code"] = 1
            server.should_exit = True
            return
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        print(
            f"minibert: serving {model_name} ({state.encoder.dim} dimensions, CPU {state.cpu}) at {where}",
            file=sys.stderr,
            flush=True,
        )

    state.on_ready.append(ready)
    server.run()
    return outcome.get("code", 0)
