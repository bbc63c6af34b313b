"""Run by tests/test_kserve.py with a venv that has KServe's SDK (kserve==0.21.0, which pins protobuf
below the project's, so not the project's venv).

Usage: kserve_probe.py FILE.yaml [FILE.yaml ...]. Builds every document into the SDK's typed model
for its kind (V1alpha1ServingRuntime, V1alpha1ClusterServingRuntime, V1beta1InferenceService) and
the Kubernetes models nested in it (V1Container, V1Probe, ...), strictly, and prints one JSON line:
``{"ok": bool, "errors": [...], "documents": [...], "sdk": {...}}``; exits 1 on any error.

Strict, because the SDK alone is not. Its own deserializer (``kserve.ApiClient``) copies only the
keys a model knows and silently drops the rest (``storageURI`` for ``storageUri`` is simply gone), and
its generated KServe models take snake_case keyword arguments. The Kubernetes client's models
(pydantic, extra="forbid") refuse unknown keys, but accept snake_case names and, unless strict,
turn "8080" into 8080; the API server takes neither. So each mapping is walked against its model's
``attribute_map`` (the JSON names) and ``openapi_types``: an unknown key, a scalar of the wrong type,
or a type the SDK has no model for is an error naming its path. Then the typed object is built (with
the constructors' own checks, e.g. required fields) and written back to JSON, which must equal the
document: nothing dropped, nothing coerced.
"""

import difflib
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import kserve.models as kserve_models
import kubernetes.client.models as kubernetes_models
import pydantic
import yaml

# kind -> (apiVersion, the SDK's model)
KINDS = {
    "ServingRuntime": ("serving.kserve.io/v1alpha1", "V1alpha1ServingRuntime"),
    "ClusterServingRuntime": ("serving.kserve.io/v1alpha1", "V1alpha1ClusterServingRuntime"),
    "InferenceService": ("serving.kserve.io/v1beta1", "V1beta1InferenceService"),
}
SCALARS = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
# The KServe models write list[X] and dict(str, X); the Kubernetes client's, List[X] and Dict[str, X].
LIST_TYPE = re.compile(r"^(?:list|List)\[(?P<item>.+)\]$")
DICT_TYPE = re.compile(r"^(?:dict\(str, (?P<a>.+)\)|Dict\[str, (?P<b>.+)\])$")


def model_class(type_name: str) -> type | None:
    """The SDK's class named ``type_name``: a KServe model, else a Kubernetes one; None if neither."""
    for module in (kserve_models, kubernetes_models):
        found = getattr(module, type_name, None)
        if isinstance(found, type) and hasattr(found, "attribute_map"):
            return found
    return None


def plain(value):
    """A typed object (or a list or dict of them) as the JSON the API server would see."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if hasattr(type(value), "attribute_map"):
        fields = ((json_name, getattr(value, attribute)) for attribute, json_name in type(value).attribute_map.items())
        return {json_name: plain(item) for json_name, item in fields if item is not None}
    return value


def first_difference(got, want, where: str) -> str | None:
    """Where ``got`` (the typed object, back as JSON) first differs from ``want`` (the document).

    A key only ``got`` has is a default the model fills in (ModelSpec's container name, ""), not a
    difference: what matters is that nothing written is dropped or changed.
    """
    if isinstance(got, dict) and isinstance(want, dict):
        for key in want:
            if key not in got:
                return f"{where}.{key}: dropped by the typed model"
            if (found := first_difference(got[key], want[key], f"{where}.{key}")) is not None:
                return found
        return None
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for index, (left, right) in enumerate(zip(got, want, strict=True)):
            if (found := first_difference(left, right, f"{where}[{index}]")) is not None:
                return found
        return None
    return None if got == want and type(got) is type(want) else f"{where}: {want!r} became {got!r}"


class StrictBuilder:
    """Builds typed objects from plain YAML values, recording every problem with its path."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def build(self, value, type_name: str, where: str):
        """``value`` as an instance of ``type_name``; None (with errors recorded) if it is not one."""
        if match := LIST_TYPE.match(type_name):
            if not isinstance(value, list):
                return self.fail(where, f"expected a list ({type_name}), got {type(value).__name__}")
            return [self.build(item, match["item"], f"{where}[{index}]") for index, item in enumerate(value)]
        if match := DICT_TYPE.match(type_name):
            if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
                return self.fail(where, f"expected a mapping with string keys ({type_name})")
            item_type = match["a"] or match["b"]
            return {key: self.build(item, item_type, f"{where}.{key}") for key, item in value.items()}
        if type_name == "object":  # int-or-string fields (probe ports) and free-form ones (status)
            return value
        if type_name in SCALARS:
            # bool is an int to Python, not to the API server.
            if not isinstance(value, SCALARS[type_name]) or (type_name != "bool" and isinstance(value, bool)):
                self.fail(where, f"expected {type_name}, got {type(value).__name__} {value!r}")
            return value
        model = model_class(type_name)
        if model is None:
            return self.fail(where, f"the SDK has no model for type {type_name}, so this field cannot be checked")
        if not isinstance(value, dict):
            return self.fail(where, f"expected a mapping ({type_name}), got {type(value).__name__}")
        return self._build_model(model, value, where)

    def _build_model(self, model: type, value: dict, where: str):
        by_json_name = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
        errors_before = len(self.errors)
        arguments = {}
        for key, item in value.items():
            attribute = by_json_name.get(key)
            if attribute is None:
                close = difflib.get_close_matches(str(key), by_json_name, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(f"{where}.{key}", f"unknown field of {model.__name__}{hint}")
                continue
            arguments[attribute] = self.build(item, model.openapi_types[attribute], f"{where}.{key}")
        if len(self.errors) > errors_before:
            return None
        try:
            if issubclass(model, pydantic.BaseModel):
                # Strict: no "8080" -> 8080; by alias, i.e. the JSON names the walk above checked.
                return model.model_validate(value, strict=True)
            return model(**arguments)
        except pydantic.ValidationError as error:
            for problem in error.errors():
                self.fail(".".join(map(str, (where, *problem["loc"]))), f"{model.__name__}: {problem['msg']}")
        except (TypeError, ValueError) as error:  # the KServe models' own checks
            self.fail(where, f"{model.__name__}: {error}")
        return None


def check_document(document, where: str, builder: StrictBuilder) -> dict | None:
    """One YAML document built into its kind's typed model; its summary, or None after errors."""
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in KINDS:
        builder.fail(where, f"kind {kind!r} is not one of {sorted(KINDS)}")
        return None
    api_version, type_name = KINDS[kind]
    if document.get("apiVersion") != api_version:
        builder.fail(f"{where}.apiVersion", f"{document.get('apiVersion')!r}, expected {api_version!r} for {kind}")
    built = builder.build(document, type_name, where)
    if built is None:
        return None
    back = plain(built)
    if (difference := first_difference(back, document, where)) is not None:
        builder.fail(where, f"the typed object does not give the document back: {difference}")
        return None
    return {"kind": kind, "name": built.metadata.name, "model": type(built).__name__, "object": back}


def main(paths: list[str]) -> int:
    builder = StrictBuilder()
    documents = []
    for path in map(Path, paths):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document is None:
                continue
            summary = check_document(document, f"{path.name}#{index}", builder)
            if summary is not None:
                documents.append({"file": path.name, **summary})
    sdk = {name: importlib.metadata.version(name) for name in ("kserve", "kubernetes")}
    print(json.dumps({"ok": not builder.errors, "errors": builder.errors, "documents": documents, "sdk": sdk}))
    return 0 if not builder.errors else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
