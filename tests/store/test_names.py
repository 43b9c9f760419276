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


def test_openais_fine_tuned_names_read_as_the_name_they_are_stored_under() -> None:
    assert parse_ref("ft:smollm2-135m-instruct:code:3f9a1c2e") == ModelRef("ft-smollm2-135m-instruct-code-3f9a1c2e")
    assert parse_ref("ft:all-minilm-l6-v2::0a1b2c3d") == ModelRef("ft-all-minilm-l6-v2-0a1b2c3d")  # no suffix


@pytest.mark.parametrize("bad", ["ft:a:b:c:d", "ft::x:1", "ft:a:b:", "ft:../x:s:1", "ft:a:b c:1", "ft:a:b"])
def test_malformed_fine_tuned_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(bad)
