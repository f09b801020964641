"""Parsing UCR/UEA .ts lines as the archive ships them (no Spark)."""
import math

import pytest

from pipeline.prep.raw import SourceError
from pipeline.prep.ucr import fill_missing, parse_case, parse_header


def test_header_labels_may_be_quoted_and_lengths_may_be_absent():
    header = parse_header(["@problemName Toy", '@classLabel true "gun draw" point \'sit down\'', "@timeStamps true"], "toy.ts")
    assert header["classes"] == ["gun draw", "point", "sit down"] and header["timestamps"] is True
    assert "serieslength" not in header and "equallength" not in header
    with pytest.raises(SourceError, match="no '@classLabel true"):
        parse_header(["@problemName Toy"], "toy.ts")


def test_a_case_with_timestamps_keeps_the_values_in_order():
    line = "(2026-01-01 00:00:00,1.5),(2026-01-01 00:00:01,?):(0,3),(1,4):\"gun draw\""
    label, values, length, dims, error = parse_case(line, 2, timestamps=True)
    assert (label, length, dims, error) == ("gun draw", 2, 2, None)
    assert values[0] == 1.5 and math.isnan(values[1]) and values[2:] == [3.0, 4.0]
    assert parse_case("1,2:3", 1, timestamps=True)[4] == "dimension 1: '@timeStamps true' needs (timestamp,value) pairs"


def test_missing_values_are_kept_for_rejection_or_filled():
    assert math.isnan(parse_case("1,?,3:a", 1)[1][1])
    assert parse_case("1,?,NaN,7:a", 1, missing="interpolate")[1] == [1.0, 3.0, 5.0, 7.0]
    assert parse_case("?,2,?:a", 1, missing="interpolate")[1] == [2.0, 2.0, 2.0]  # ends take the nearest value
    assert parse_case("1,?,5:a", 1, missing="mean")[1] == [1.0, 3.0, 5.0]
    assert parse_case("?,?:a", 1, missing="mean")[4] == "dimension 1: every value is missing"
    assert fill_missing([1.0, 2.0], "interpolate") == [1.0, 2.0]
    assert parse_case("1,x:a", 1)[4] == "dimension 1: not a number 'x'"
