import logging
import os

import pytest

from rs_jax import failures

SPEC_DUMP = '[tensorstore_spec=\'{"driver":"zarr","kvstore":{"path":"/x/"}}\']'


def failing_orbax_like_call():
    logging.getLogger("absl").error("background save failed:\nTraceback (most recent call last):\n  ...")
    raise ValueError(f"OUT_OF_RANGE: Error writing w {SPEC_DUMP}: No space left on device\n  detail\n  more")


def test_a_failure_is_one_line_and_its_report_goes_to_the_log(tmp_path, capfd):
    log = tmp_path / "run" / "error.log"
    with pytest.raises(failures.ReportedError) as error, failures.quiet_failures(log):
        failing_orbax_like_call()
    assert str(error.value) == (
        f"OUT_OF_RANGE: Error writing w: No space left on device (full report: {log})"
    )
    assert error.value.log_path == str(log)
    report = log.read_text()
    assert "ERROR:absl:background save failed:" in report
    assert "Traceback (most recent call last)" in report and "failing_orbax_like_call" in report
    assert SPEC_DUMP in report, "the log keeps the full message"
    captured = capfd.readouterr()
    assert "background save" not in captured.err + captured.out, "absl records stay off the terminal"
    assert logging.getLogger("absl").propagate, "the loggers are restored afterwards"


def test_a_long_message_keeps_its_start_and_its_end():
    message = "OUT_OF_RANGE: Error writing " + "x" * 1000 + ": File too large"
    summary = failures.summarize(ValueError(message))
    assert summary.startswith("OUT_OF_RANGE: Error writing xxx") and summary.endswith(": File too large")
    assert " … " in summary and len(summary) < 450


def test_an_unwritable_log_falls_back_to_the_temporary_folder(tmp_path):
    (tmp_path / "a-file").write_text("x")
    unwritable = tmp_path / "a-file" / "error.log"
    with pytest.raises(failures.ReportedError) as error, failures.quiet_failures(unwritable):
        raise RuntimeError("boom")
    assert str(error.value).startswith("boom (full report: ")
    with open(error.value.log_path) as handle:
        assert "RuntimeError: boom" in handle.read()
    os.remove(error.value.log_path)


def test_success_writes_a_log_only_when_records_were_captured(tmp_path):
    with failures.quiet_failures(tmp_path / "quiet.log"):
        pass
    assert not (tmp_path / "quiet.log").exists()
    with failures.quiet_failures(tmp_path / "noisy.log"):
        logging.getLogger("absl").warning("orbax noticed something")
    assert (tmp_path / "noisy.log").read_text() == "WARNING:absl:orbax noticed something\n"


def test_interrupts_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyboardInterrupt), failures.quiet_failures(tmp_path / "error.log"):
        raise KeyboardInterrupt
    assert not (tmp_path / "error.log").exists()


def test_check_writable_creates_nothing_and_refuses_a_path_under_a_file(tmp_path):
    failures.check_writable(tmp_path / "new" / "deeper")
    assert os.listdir(tmp_path) == []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match=r"^--out .*a-file/run: .*a-file is a file, not a directory\.$"):
        failures.check_writable(tmp_path / "a-file" / "run")
