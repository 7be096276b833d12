"""Checkpoints: round trip, half precision, and refusal of anything foreign or unsafe."""

import os
import pickle

import pytest
import torch

import tnn
from tnn.checkpoint import FORMAT, VERSION, CheckpointError, read_checkpoint
from tnn.cli import main as cli_main
from tnn.runtime import resolve_device


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = tnn.create_model("resnet20", in_channels=1, input_size=28)
    m.train()
    with torch.no_grad():  # give every level's norms non-trivial statistics
        for u in m.levels:
            m(torch.rand(8, 1, 28, 28), u)
    return m.eval()


def test_round_trip_restores_weights_statistics_and_card(model, tmp_path):
    path = tmp_path / "m.pt"
    accuracy = {0.125: 41.5, 1.0: 93.25}
    tnn.save_checkpoint(model, path, dataset="fashion_mnist", variant="tnn", accuracy=accuracy, made={"seed": 3})
    loaded, card = tnn.load_checkpoint(path)
    assert not loaded.training
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        for u in model.levels:
            torch.testing.assert_close(loaded(x, u), model(x, u), rtol=0, atol=0)
    assert card["arch"] == "resnet20" and card["dataset"] == "fashion_mnist" and card["variant"] == "tnn"
    assert card["accuracy"] == {"0.125": 41.5, "1": 93.25}
    assert card["levels"] == list(model.levels) and card["made"] == {"seed": 3}
    assert card["flops"]["0.5"] == model.flops(0.5) and card["params"]["1"] == model.params(1.0)
    assert loaded.model_kwargs == model.model_kwargs
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_half_precision_storage_is_smaller_and_close(model, tmp_path):
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    tnn.save_checkpoint(model, full)
    tnn.save_checkpoint(model, half, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = tnn.load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=5e-2, rtol=5e-2)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_pickle_is_refused_without_running_its_code(tmp_path):
    target = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.target = target
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": 1, "payload": exploit}, path)
    with pytest.raises(CheckpointError, match="never unpickled"):
        tnn.load_checkpoint(path)
    assert not target.exists()
    raw = tmp_path / "evil.pkl"  # a bare pickle, not even a torch zip file
    raw.write_bytes(pickle.dumps(exploit))
    with pytest.raises(CheckpointError):
        tnn.load_checkpoint(raw)
    assert not target.exists()


def test_corrupt_foreign_and_newer_files_get_clear_errors(model, tmp_path):
    good = tmp_path / "good.pt"
    tnn.save_checkpoint(model, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        tnn.load_checkpoint(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        tnn.load_checkpoint(text)
    foreign = tmp_path / "state_dict.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(CheckpointError, match="not a TNN checkpoint"):
        tnn.load_checkpoint(foreign)
    run_state = tmp_path / "last.pt"
    torch.save({"version": 1, "config": {}, "epoch": 3, "model": {}, "optimizer": {}, "history": []}, run_state)
    with pytest.raises(CheckpointError, match=r"a tnn pretrain run state .* use the model\.pt beside it"):
        tnn.load_checkpoint(run_state)
    payload = read_checkpoint(good)
    newer = tmp_path / "newer.pt"
    torch.save({**payload, "version": VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match=f"v{VERSION + 1}, newer .*upgrade"):
        tnn.load_checkpoint(newer)
    wrong = tmp_path / "wrong_arch.pt"
    torch.save({**payload, "arch": "resnet32"}, wrong)
    with pytest.raises(CheckpointError, match="do not fit resnet32"):
        tnn.load_checkpoint(wrong)
    unknown = tmp_path / "unknown_arch.pt"
    torch.save({**payload, "arch": "resnet21"}, unknown)
    with pytest.raises(CheckpointError, match="known models"):
        tnn.load_checkpoint(unknown)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        tnn.load_checkpoint(tmp_path / "missing.pt")


def test_nan_weights_are_refused(model, tmp_path):
    path = tmp_path / "nan.pt"
    tnn.save_checkpoint(model, path)
    payload = read_checkpoint(path)
    payload["state_dict"]["fc.weight"] = torch.full_like(payload["state_dict"]["fc.weight"], float("nan"))
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="NaN"):
        tnn.load_checkpoint(path)


def test_meta_must_be_storable_and_models_must_come_from_the_registry(model, tmp_path):
    with pytest.raises(ValueError, match="not storable"):
        tnn.save_checkpoint(model, tmp_path / "x.pt", made={"when": object()})
    bare = tnn.models.resnet.CifarResNet(20)
    with pytest.raises(ValueError, match="create_model"):
        tnn.save_checkpoint(bare, tmp_path / "y.pt")
    assert not any(tmp_path.iterdir())


def test_failed_write_leaves_the_old_file_intact(model, tmp_path):
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(model, path)
    before = path.read_bytes()

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        tnn.checkpoint.atomic_write(path, boom)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_text_files_are_not_called_tampered(tmp_path):
    for name, content in (("notes.pt", "hello"), ("page.pt", "<html>Not Found</html>"), ("data.pt", '{"a": 1}')):
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(CheckpointError, match=f"{name} is not a PyTorch checkpoint") as info:
            tnn.load_checkpoint(path)
        assert "tampered" not in str(info.value)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt is empty"):
        tnn.load_checkpoint(empty)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"card": [1, 2]}, "'card' is of type list, not dict"),
        ({"state_dict": [1, 2]}, "'state_dict' is of type list, not dict"),
        ({"model_kwargs": "resnet20"}, "'model_kwargs' is of type str, not dict"),
        ({"arch": 20}, "'arch' is of type int, not str"),
    ],
)
def test_malformed_payload_fields_name_the_file(model, tmp_path, change, message):
    good = tmp_path / "good.pt"
    tnn.save_checkpoint(model, good)
    bad = tmp_path / "bad.pt"
    torch.save({**read_checkpoint(good), **change}, bad)
    with pytest.raises(CheckpointError, match=f"bad.pt: checkpoint {message}"):
        tnn.load_checkpoint(bad)


def test_non_tensor_weights_name_the_file(model, tmp_path):
    good = tmp_path / "good.pt"
    tnn.save_checkpoint(model, good)
    payload = read_checkpoint(good)
    payload["state_dict"]["fc.weight"] = [1.0, 2.0]
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=r"bad.pt: checkpoint state_dict holds .*'fc.weight'"):
        tnn.load_checkpoint(bad)


@pytest.mark.parametrize("extra", [{1: 2}, {"name": "resnet20"}])
def test_model_kwargs_that_are_not_keyword_arguments_are_refused(model, tmp_path, capsys, extra):
    good = tmp_path / "good.pt"
    tnn.save_checkpoint(model, good)
    payload = read_checkpoint(good)
    payload["model_kwargs"] = {**payload["model_kwargs"], **extra}
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=r"bad.pt: checkpoint model_kwargs has keys"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="cannot rebuild the model"):  # the TypeError of **kwargs, named
        tnn.checkpoint.model_from_payload(payload, bad)
    for command in (["info", str(bad)], ["evaluate", str(bad)]):
        assert cli_main(command) == 2
        assert "model_kwargs has keys" in capsys.readouterr().err


def test_meta_may_not_replace_the_computed_card_fields(model, tmp_path):
    assert set(tnn.checkpoint.COMPUTED_FIELDS) <= set(
        read_checkpoint(tnn.save_checkpoint(model, tmp_path / "ok.pt"))["card"]
    )
    with pytest.raises(ValueError, match=r"arch, levels are computed from the model and cannot be given as meta"):
        tnn.save_checkpoint(model, tmp_path / "x.pt", arch="vgg11", levels=[9], dataset="cifar10")
    with pytest.raises(ValueError, match="flops is computed"):
        tnn.save_checkpoint(model, tmp_path / "x.pt", flops={"1": 0})
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("fc.weight", lambda t: t.long()),
        ("fc.weight", lambda t: t.to(torch.complex64)),
        ("stem_bn.norms.0.num_batches_tracked", lambda t: t.float()),
    ],
)
def test_stored_tensors_of_the_wrong_dtype_kind_are_refused(model, tmp_path, name, make):
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(model, path)
    payload = read_checkpoint(path)
    payload["state_dict"][name] = make(payload["state_dict"][name])
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=rf"m.pt: stored tensors of the wrong kind .*{name} is torch\."):
        tnn.load_checkpoint(path)


def test_accuracy_at_reads_levels_as_save_checkpoint_stores_them(tmp_path):
    model = tnn.create_model("resnet8", in_channels=1, input_size=28, num_levels=3)
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(model, path, accuracy={u: 10.0 * (i + 1) for i, u in enumerate(model.levels)})
    card = read_checkpoint(path)["card"]
    assert sorted(card["accuracy"]) == ["0.333333", "0.666667", "1"]  # f"{u:g}", as documented
    assert 'f"{u:g}"' in tnn.save_checkpoint.__doc__ and "as JSON would" not in tnn.save_checkpoint.__doc__
    assert [tnn.accuracy_at(card, u) for u in model.levels] == [10.0, 20.0, 30.0]
    assert tnn.accuracy_at(card, 1) == 30.0 and tnn.accuracy_at(card, 0.5) is None
    assert tnn.accuracy_at({"accuracy": {1: 90.0, "0.50": 70.0}}, 0.5) == 70.0  # other spellings of the key
    assert tnn.accuracy_at({"accuracy": {1: 90.0}}, 1.0) == 90.0
    assert tnn.accuracy_at({"arch": "resnet8"}, 1.0) is None
    with pytest.raises(ValueError, match="u must be a finite real number"):
        tnn.accuracy_at(card, "1")
    with pytest.raises(ValueError, match="'accuracy' is a list"):
        tnn.accuracy_at({"accuracy": [1.0]}, 1.0)


def test_info_reads_files_without_a_dtype_field(model, tmp_path, capsys):
    path = tmp_path / "old.pt"
    tnn.save_checkpoint(model, path, half=True)
    payload = read_checkpoint(path)
    del payload["dtype"]
    torch.save(payload, path)
    assert cli_main(["info", str(path)]) == 0
    assert "(float16 weights)" in capsys.readouterr().out


@pytest.mark.parametrize("device", [torch.device("meta"), torch.device("mps"), "meta"])
def test_devices_other_than_cpu_and_cuda_are_refused_whatever_their_type(model, tmp_path, device):
    path = tnn.save_checkpoint(model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"unknown device '(meta|mps)'; use auto, cpu, cuda or cuda:N"):
        tnn.load_checkpoint(path, map_location=device)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_card_accuracy_must_name_model_levels_and_percentages(model, tmp_path):
    path = tmp_path / "x.pt"
    for accuracy, message in (
        ({2.0: 91.0}, r"accuracy key 2.0 is not one of the model's levels"),
        ({0.5: "high"}, r"accuracy at u=0.5 must be a top-1 % in \[0, 100\], got 'high'"),
        ({1.0: float("nan")}, r"accuracy at u=1 must be a top-1 %"),
        ({1.0: 101}, r"got 101"),
        ([90.0], r"accuracy must be a dict"),
    ):
        with pytest.raises(ValueError, match=message):
            tnn.save_checkpoint(model, path, accuracy=accuracy)
        assert not path.exists()
    tnn.save_checkpoint(model, path, accuracy={1: 90, "0.125": 40.5})  # int and str spellings of levels are fine
    assert read_checkpoint(path)["card"]["accuracy"] == {"1": 90.0, "0.125": 40.5}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["card"].__setitem__("levels", [0.5, 1.0]), r"the card's levels \[0.5, 1.0\] are not the levels"),
        (lambda p: p["card"].__setitem__("levels", ["a"]), r"the card's levels \['a'\]"),
        (lambda p: p.__setitem__("dtype", "int8"), r"unknown weight dtype 'int8'"),
    ],
)
def test_a_card_that_disagrees_with_its_weights_is_refused(model, tmp_path, edit, message):
    path = tmp_path / "m.pt"
    tnn.save_checkpoint(model, path)
    payload = read_checkpoint(path)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        tnn.load_checkpoint(path)


def test_a_run_directory_stands_for_its_model_pt(model, tmp_path, capsys):
    run = tmp_path / "run"
    tnn.save_checkpoint(model, run / "model.pt", dataset="fashion_mnist")
    assert tnn.load_checkpoint(run)[1]["dataset"] == "fashion_mnist"
    assert cli_main(["info", str(run)]) == 0 and '"dataset": "fashion_mnist"' in capsys.readouterr().out
    with pytest.raises(
        FileNotFoundError, match=r"is a directory without a model.pt; name a checkpoint file \(it holds"
    ):
        tnn.load_checkpoint(tmp_path)
    with pytest.raises(TypeError, match="expected a checkpoint path"):
        tnn.load_checkpoint(None)


def test_a_pickled_module_is_refused_naming_its_class_without_terminal_codes(tmp_path, capsys):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    assert cli_main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "it pickles torch.nn.modules.linear.Linear" in err
    assert "\x1b" not in err and "Traceback" not in err


def test_atomic_write_names_a_path_it_cannot_write_before_writing(tmp_path):
    calls = []
    (tmp_path / "file").write_text("x")
    for target, error, message in (
        (tmp_path, IsADirectoryError, r"is a directory; give a file path"),
        (tmp_path / "file" / "x.json", NotADirectoryError, r"file is a file, not a directory"),
    ):
        with pytest.raises(error, match=message) as info:
            tnn.checkpoint.atomic_write(target, calls.append)
        assert ".tmp" not in str(info.value)  # the temporary file's name does not leak into the message
    assert calls == []  # refused before the write ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
