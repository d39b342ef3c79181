"""The command line stops its forkserver when ``main`` returns.

In this file so that it runs last (pytest takes the files in name order): conftest keeps the
session's forkserver for the other in-process runs, and this test ends it — a later stage would
pay a new one (~5 s of CPU)."""
import os
import time

from bnconvert import isolate


def test_main_stops_its_forkserver(one_forkserver_per_session, monkeypatch, tmp_path, capsys):
    """``bnconvert`` stops the forkserver when ``main`` returns (conftest keeps it for the other
    in-process runs of the session: here the real ``_stop_children`` runs)."""
    from multiprocessing import forkserver

    from bnconvert.cli import main as cli

    isolate.prestart()
    pid = forkserver._forkserver._forkserver_pid  # noqa: SLF001
    assert pid and os.path.exists(f"/proc/{pid}")
    monkeypatch.setattr(cli, "_stop_children", one_forkserver_per_session)
    assert cli.main(["fold", str(tmp_path / "missing.pb"), "-o", str(tmp_path / "out")]) == 2
    assert "missing.pb" in capsys.readouterr().err
    assert forkserver._forkserver._forkserver_pid is None  # noqa: SLF001
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # killed: gone (reaped) or a zombie
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the forkserver still runs")
