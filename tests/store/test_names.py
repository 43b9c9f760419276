import pytest

from llmos.errors import InvalidName
from llmos.store.names import ModelRef, parse_ref


def test_default_tag() -> None:
    assert parse_ref("smollm2") == ModelRef("smollm2", "latest")
    assert str(parse_ref("a.b-c_d:v1.2")) == "a.b-c_d:v1.2"


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", "x:..", "..", ".hidden", "a:b:c", "a:", "-x",
                                 "x" * 129, "a b", "naïve", "a\x00b", "x:../../etc"])
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(bad)
