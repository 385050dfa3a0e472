"""charrnn.nn.lineage: the parent record of a fine-tuning and the architecture it takes."""
import json

import pytest

from charrnn.core.params import TrainParams
from charrnn.nn.lineage import Parent, ParentError, check_same, read_record, record, train_params
from charrnn.nn.modeldir import ModelConfig

PARENT = ModelConfig(vocab_size=20, embedding_dim=16, units=32, layers=2, cell="lstm")


def test_the_parent_architecture_replaces_the_defaults():
    train = train_params(TrainParams(learning_rate=0.01, dropout=0.1), PARENT)
    assert (train.cell, train.layers, train.embedding_dim, train.units) == ("lstm", 2, 16, 32)
    assert train.learning_rate == 0.01 and train.dropout == 0.1  # how to train stays the params'


def test_a_size_set_to_the_parents_value_is_no_conflict():
    assert train_params(TrainParams(units=32, layers=2), PARENT).units == 32


def test_a_conflicting_size_is_an_error_naming_both_values():
    with pytest.raises(ParentError) as e:
        train_params(TrainParams(units=64, cell="gru"), PARENT)
    assert "train.units is 64 but the parent's is 32" in str(e.value)
    assert "train.cell is 'gru'" not in str(e.value)  # gru is the default: not set, no conflict
    with pytest.raises(ParentError, match="train.cell is 'lstm' but the parent's is 'gru'"):
        train_params(TrainParams(cell="lstm"), ModelConfig(vocab_size=20, embedding_dim=16, units=32))


def test_an_adaptive_parent_is_refused():
    with pytest.raises(ParentError, match="adaptive"):
        train_params(TrainParams(), ModelConfig(vocab_size=3, embedding_dim=4, units=4, softmax="adaptive",
                                                clusters=((0, 1), (2,)), tail_dims=(1,)))


def test_records_round_trip_and_say_where_the_parent_is(tmp_path):
    registered = Parent("models:/base@champion", "ab" * 32, "base", "3")
    assert registered.pinned == "models:/base/3"
    assert Parent("models/base", "cd" * 32).pinned == "models/base"
    path = tmp_path / "parent.json"
    path.write_text(json.dumps(record(registered)))
    assert read_record(path, "models:/base@champion") == registered
    path.write_text(json.dumps(record(None)))
    assert read_record(path, "") is None


def test_a_record_of_another_init_from_or_none_is_an_error(tmp_path):
    path = tmp_path / "parent.json"
    with pytest.raises(ParentError, match="missing: run `dvc repro build_vocab`"):
        read_record(path, "")
    path.write_text(json.dumps(record(None)))
    with pytest.raises(ParentError, match="another train.init_from"):
        read_record(path, "models:/base@champion")


def test_a_parent_that_changed_since_build_vocab_is_an_error():
    recorded = Parent("models:/base@champion", "ab" * 32, "base", "3")
    check_same(recorded, "ab" * 32)
    with pytest.raises(ParentError, match=r"models:/base/3 is not the model build_vocab extended .*dvc repro -f -s build_vocab"):
        check_same(recorded, "cd" * 32)
