"""Ctrl-C and SIGTERM: finish the step, write a checkpoint, leave cleanly; a second signal is a hard stop."""

from __future__ import annotations

import signal
import threading

import torch


class StopSignals:
    class Stop(Exception):
        """Raised by ``check`` at the top of a step once a signal arrived."""

    def __init__(self):
        self.received: str | None = None  # "SIGINT" / "SIGTERM"
        self._old = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def check(self, dist, device: torch.device) -> None:
        """Raise ``Stop`` if a signal arrived; under torchrun every rank agrees to stop at the same step."""
        if dist.enabled:
            flag = torch.tensor([1.0 if self.received else 0.0], device=device)
            torch.distributed.all_reduce(flag)
            if flag.item() > 0:
                self.received = self.received or "SIGINT"
        if self.received:
            raise StopSignals.Stop()

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
