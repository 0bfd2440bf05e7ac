"""What the comparison stage writes for each experiment (site_assets/experiments/NAME.json), as a JSON Schema: the
figures and pages read these files, and check_result refuses one that does not hold it, in one paragraph."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from pipeline.compare.records import RunRecord
from pipeline.config import PipelineError
from pipeline.experiments.designs import DESIGNS

JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array",
              tuple: "array", type(None): "null"}
NUMBER_OR_NULL = {"type": ["number", "null"]}
STRINGS = {"type": "array", "items": {"type": "string"}}


def _json_type(annotation) -> list[str]:
    """The JSON types a field's annotation allows (X | None: X or null; list[...] and dict[...]: array, object)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [t for arg in typing.get_args(annotation) for t in _json_type(arg)]
    return [JSON_TYPES[typing.get_origin(annotation) or annotation]]


def _record_schema(cls) -> dict:
    """A frozen record's written fields, each required, with the JSON types of its annotation."""
    hints = typing.get_type_hints(cls)
    written = [f.name for f in dataclasses.fields(cls) if f.name not in cls.NOT_WRITTEN]
    return {"type": "object", "required": written, "properties": {f: {"type": _json_type(hints[f])} for f in written}}


INTERVAL = {"type": ["object", "null"],
            "required": ["difference", "low", "high", "p_value", "se", "counts_test_sample"],
            "properties": {"difference": {"type": "number"}, "low": {"type": "number"}, "high": {"type": "number"},
                           "p_value": {"type": "number"}, "se": {"type": "number"},
                           "counts_test_sample": {"type": "boolean"}, "p_holm": {"type": "number"},
                           "family": {"type": "integer"}}}
METRIC_COMPARISON = {"type": "object", "required": ["metric", "verdict", "training", "interval", "sample",
                                                     "seed_tests", "borrowed"],
                     "properties": {"metric": {"type": "string"}, "verdict": {"type": "string"},
                                    "difference": {"type": "number"}, "interval": INTERVAL,
                                    "training": {"type": ["object", "null"]}, "sample": {"type": ["object", "null"]},
                                    "seed_tests": {"type": "array", "items": {"type": "object",
                                                                               "required": ["seed", "p_value"]}},
                                    "borrowed": {"type": ["object", "null"],
                                                 "required": ["sd", "n", "source", "machines"]}}}
COMPARISON = {"type": "object", "required": ["arm", "against", "expect", "metrics", "verdict"],
              "properties": {"arm": {"type": "string"}, "against": {"type": "string"},
                             "expect": {"enum": ["higher", "lower", None]}, "verdict": {"type": "string"},
                             "metrics": {"type": "array", "minItems": 1, "items": METRIC_COMPARISON}}}
# Each design's answer holds its own fields (Design.answer_fields); a confirmation not finished is "held".
ANSWER = {"type": "object", "required": ["kind"],
          "properties": {"kind": {"enum": ["held", *DESIGNS]}},
          "allOf": [{"if": {"properties": {"kind": {"const": name}}},
                     "then": {"required": list(design.answer_fields)}} for name, design in DESIGNS.items()]
          + [{"if": {"properties": {"kind": {"const": "held"}}}, "then": {"required": ["metric"]}}]}
RESULT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "The comparison stage's result for one experiment",
    "type": "object",
    "required": ["name", "model", "question", "claim", "caveats", "rule", "design", "trains", "plots", "budget",
                 "metrics", "control", "sweep", "choose_on", "complete", "planned_runs", "confirmatory",
                 "exploratory", "differing_fields", "varied_fields", "differing_provenance", "mix",
                 "reproduction", "runs", "uncounted", "machine", "summaries", "comparisons", "answer",
                 "train_wall_s", "padding_sentences"],
    "properties": {
        "name": {"type": "string"}, "model": {"enum": ["cls", "mt"]}, "question": {"type": "string"},
        "claim": {"type": "string"}, "caveats": STRINGS, "rule": {"type": "string"},
        "design": {"enum": list(DESIGNS)}, "trains": {"type": "boolean"}, "plots": STRINGS,
        "budget": {"type": "string"}, "metrics": {**STRINGS, "minItems": 1},
        "control": {"type": ["string", "null"]}, "sweep": {"type": ["string", "null"]},
        "choose_on": {"type": ["string", "null"]}, "complete": {"type": "boolean"},
        "planned_runs": {"type": "integer"}, "confirmatory": {"type": "boolean"}, "exploratory": {"type": "boolean"},
        "differing_fields": STRINGS, "varied_fields": STRINGS, "differing_provenance": STRINGS,
        "mix": {"type": "object", "required": ["commits", "training_code_changes", "machines"],
                "properties": {"commits": STRINGS, "training_code_changes": {"type": ["array", "null"]},
                               "machines": {"type": "array", "items": {"type": "object",
                                                                       "required": ["machine", "runs"]}}}},
        "reproduction": {"type": ["object", "null"],
                         "required": ["metric", "score", "low", "high", "inside", "runs", "machine", "machines"]},
        "runs": {"type": "array", "minItems": 1, "items": _record_schema(RunRecord)},
        "uncounted": {"type": "array", "items": {"type": "object",
                                                 "required": ["folder", "commit", "command", "where", "reason"],
                                                 "properties": {"reason": {"enum": ["uncommitted", "machine"]}}}},
        "machine": {"type": "object"},
        "summaries": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": {"type": "object", "required": ["mean", "sd", "n"],
                                                       "properties": {"mean": {"type": "number"},
                                                                      "sd": NUMBER_OR_NULL,
                                                                      "n": {"type": "integer"}}}}},
        "comparisons": {"type": "array", "items": COMPARISON},
        "answer": ANSWER,
        "train_wall_s": {"type": "number"}, "padding_sentences": STRINGS,
    },
}
VALIDATOR = Draft202012Validator(RESULT)


def check_result(result: dict, path: Path) -> dict:
    """The result, if it holds the schema; else the one-paragraph error naming the file and the first thing
    wrong."""
    error = best_match(VALIDATOR.iter_errors(result))
    if error is None:
        return result
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    raise PipelineError(f"{path}: this is not what the comparison stage writes (pipeline/compare/schema.py): at "
                        f"{where}, {error.message}. It was written by another version of the pipeline or edited by "
                        "hand; `make report` (python -m pipeline compare, then the figures and pages) writes it "
                        "again from the runs' files.")
