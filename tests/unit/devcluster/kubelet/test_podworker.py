"""devcluster/kubelet/podworker.py: back-off, exit codes and the termination message (pure
parts)."""

from __future__ import annotations

from pathlib import Path

from mmop.devcluster.kubelet import podworker


def test_backoff_restarts_at_once_then_doubles_up_to_the_cap() -> None:
    backoff = podworker.Backoff(initial=2, maximum=10, reset_after=60)
    delays = [backoff.next_delay(1.0) for _ in range(6)]
    assert delays == [0, 2, 4, 8, 10, 10]


def test_backoff_resets_after_a_long_run() -> None:
    backoff = podworker.Backoff(initial=2, maximum=10, reset_after=60)
    backoff.next_delay(1.0)
    backoff.next_delay(1.0)
    assert backoff.next_delay(61.0) == 0


def test_exit_codes() -> None:
    assert podworker.exit_code_of(1) == 1
    assert podworker.exit_code_of(-9) == 137
    assert podworker.exit_code_of(-15) == 143


def test_tail_message_reads_only_the_last_run(tmp_path: Path) -> None:
    log = tmp_path / "pod.log"
    log.write_text("earlier run\n")
    offset = log.stat().st_size
    with log.open("a") as handle:
        handle.write("".join(f"line {i}\n" for i in range(100)))
    message = podworker.tail_message(log, offset)
    lines = message.splitlines()
    assert lines[-1] == "line 99"
    assert len(lines) <= podworker.MESSAGE_LINES
    assert "earlier run" not in message


def test_runtime_command_runs_this_environment() -> None:
    command = podworker.runtime_command()
    assert command[1:] == ("-m", "mmop.runtime.cli")
