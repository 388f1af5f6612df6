"""The stop-signal recorder: each signal sent to this process is recorded (not acted on), a second Ctrl-C raises,
and the previous handlers are back afterwards."""
import os
import signal

import pytest
import torch

from nnssl_plugin.stop_signals import SIGNALS, StopSignals, StopTraining


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_signal_is_recorded_and_the_previous_handler_restored(sig):
    before = {s: signal.getsignal(s) for s in SIGNALS}
    with StopSignals() as stop:
        assert stop.requested(torch.device("cpu")) is None
        os.kill(os.getpid(), sig)  # delivered to the main thread before the next bytecode
        assert stop.requested(torch.device("cpu")) == sig
    assert {s: signal.getsignal(s) for s in SIGNALS} == before
    assert StopTraining(sig).signum == sig and str(StopTraining(sig)) == signal.Signals(sig).name


def test_a_second_ctrl_c_raises_at_once():
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested(torch.device("cpu")) == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
