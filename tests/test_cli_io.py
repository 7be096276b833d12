"""The ``tnn`` command's own behaviour: --version, output paths refused before any work, closed pipes."""

import subprocess
import sys

import pytest

import tnn
from tnn.cli import main


def test_version_names_tnn_and_torch(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("tnn ") and "torch" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "resnet8", "--repeats", "2", "--out", "{tmp}"], "--out {tmp} is a directory; give a file path"),
        (["profile", "resnet8", "--repeats", "2", "--out", "{tmp}/file/p.json"], "file is a file, not a directory"),
        (["bench", "latency", "--models", "resnet8", "--json", "{tmp}"], "--json {tmp} is a directory"),
        (["report", "{tmp}/ckpt", "--out", "{tmp}"], "--out {tmp} is a directory"),
    ],
)
def test_a_bad_output_path_is_refused_before_the_work(tmp_path, capsys, monkeypatch, argv, message):
    import tnn.bench
    import tnn.profile

    def no_work(*args, **kwargs):
        raise AssertionError("the command measured before checking where to write")

    monkeypatch.setattr(tnn.profile, "profile_model", no_work)
    monkeypatch.setattr(tnn.bench, "bench_latency", no_work)
    (tmp_path / "file").write_text("x")
    tnn.save_checkpoint(tnn.create_model("resnet8"), tmp_path / "ckpt" / "model.pt", dataset="cifar10")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err


def test_report_refuses_to_splice_into_a_binary_file(tmp_path, capsys):
    tnn.save_checkpoint(tnn.create_model("resnet8"), tmp_path / "run" / "model.pt", dataset="cifar10")
    binary = tmp_path / "weights.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe" * 8)
    assert main(["report", str(tmp_path / "run"), "--out", str(binary)]) == 2
    assert "is not a text file" in capsys.readouterr().err
    assert binary.read_bytes() == b"\x80\x02\xff\xfe" * 8


def test_profile_refuses_model_only_flags_with_a_checkpoint(tmp_path, capsys):
    ckpt = tnn.save_checkpoint(tnn.create_model("resnet8"), tmp_path / "m.pt", dataset="cifar10")
    assert main(["profile", str(ckpt), "--in-channels", "3", "--repeats", "2"]) == 2
    assert "--in-channels applies to a MODEL name only" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly():
    """`tnn models | head -1`: no 'Broken pipe' error once the reader has gone."""
    script = "import sys; from tnn.cli import main; sys.exit(main(['models']))"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Broken pipe" not in err and "Traceback" not in err, err


def test_time_to_accuracy_refuses_a_level_outside_0_1(tmp_path, capsys):
    tnn.save_checkpoint(tnn.create_model("resnet8"), tmp_path / "m.pt", dataset="cifar10")
    assert main(["bench", "time-to-accuracy", str(tmp_path / "m.pt"), "--level", "5"]) == 2
    assert "level is a u in (0, 1]" in capsys.readouterr().err
