"""WADL documents (the W3C member submission of 2009), the form of a PS3.18 Capabilities
Description (Annex H), and the same tree as JSON.

The model is small: an application has one `resources` element whose `base` is a URL,
holding a tree of resources; each resource has a path (relative to its parent, with
`{name}` template parameters), methods, and child resources. capabilities.py builds it
from the app's routes; this module only writes it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

WADL_MEDIA_TYPE = "application/vnd.sun.wadl+xml"
NAMESPACE = "http://wadl.dev.java.net/2009/02"
_XSD = "http://www.w3.org/2001/XMLSchema"

ET.register_namespace("", NAMESPACE)


@dataclass(frozen=True, slots=True)
class Param:
    """A request parameter: `template` (a path segment), `query` or `header`."""

    name: str
    style: str
    doc: str = ""
    required: bool = False
    repeating: bool = False
    # An XML Schema simple type, e.g. "xs:string", "xs:int", "xs:boolean".
    type: str = "xs:string"
    default: str | None = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """A response: the status codes it has and the media types its body can be in."""

    statuses: tuple[int, ...]
    media_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Method:
    """One HTTP method of a resource."""

    name: str
    id: str
    title: str
    doc: str = ""
    params: tuple[Param, ...] = ()
    # Media types of the request body.
    accepts: tuple[str, ...] = ()
    replies: tuple[Reply, ...] = ()


@dataclass(slots=True)
class Resource:
    """A resource: its path relative to the parent, then methods and child resources."""

    path: str
    params: list[Param] = field(default_factory=list)
    methods: list[Method] = field(default_factory=list)
    children: list[Resource] = field(default_factory=list)

    def child(self, path: str) -> Resource:
        """The child resource at `path`, added if it is not there yet."""
        for existing in self.children:
            if existing.path == path:
                return existing
        added = Resource(path)
        self.children.append(added)
        return added


@dataclass(frozen=True, slots=True)
class Application:
    """A whole document: a title and the resources below `base`."""

    title: str
    base: str
    resources: Sequence[Resource]


def to_xml(application: Application) -> bytes:
    """The WADL document, UTF-8 with an XML declaration."""
    root = _element("application")
    # Param types are QNames in attribute values, which ElementTree does not see.
    root.set("xmlns:xs", _XSD)
    _doc(root, application.title, "")
    resources = _element("resources", base=application.base)
    root.append(resources)
    for resource in application.resources:
        resources.append(_resource(resource))
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def to_json(application: Application) -> dict[str, Any]:
    """The same tree as JSON: element names become keys, repeated elements lists.

    `{"title", "base", "resources": [resource]}`; a resource is `{"path", "params",
    "methods", "resources"}`; a method `{"name", "id", "title", "doc", "request":
    {"params", "representations"}, "responses": [{"status": [int], "representations":
    [media type]}]}`; a param `{"name", "style", "type", "required", "repeating", and
    "doc", "default", "options" when they are given}`.
    """
    return {
        "title": application.title,
        "base": application.base,
        "resources": [_resource_json(r) for r in application.resources],
    }


def _element(tag: str, **attributes: str) -> ET.Element:
    return ET.Element(f"{{{NAMESPACE}}}{tag}", attributes)


def _doc(parent: ET.Element, title: str, text: str) -> None:
    if not title and not text:
        return
    doc = _element("doc", **({"title": title} if title else {}))
    doc.text = text or None
    parent.append(doc)


def _resource(resource: Resource) -> ET.Element:
    element = _element("resource", path=resource.path)
    for param in resource.params:
        element.append(_param(param))
    for method in resource.methods:
        element.append(_method(method))
    for child in resource.children:
        element.append(_resource(child))
    return element


def _method(method: Method) -> ET.Element:
    element = _element("method", name=method.name, id=method.id)
    _doc(element, method.title, method.doc)
    request = _element("request")
    for param in method.params:
        request.append(_param(param))
    for media_type in method.accepts:
        request.append(_element("representation", mediaType=media_type))
    if len(request):
        element.append(request)
    for reply in method.replies:
        response = _element("response", status=" ".join(str(s) for s in reply.statuses))
        for media_type in reply.media_types:
            response.append(_element("representation", mediaType=media_type))
        element.append(response)
    return element


def _param(param: Param) -> ET.Element:
    attributes = {"name": param.name, "style": param.style, "type": param.type}
    if param.required:
        attributes["required"] = "true"
    if param.repeating:
        attributes["repeating"] = "true"
    if param.default is not None:
        attributes["default"] = param.default
    element = _element("param", **attributes)
    _doc(element, "", param.doc)
    for option in param.options:
        element.append(_element("option", value=option))
    return element


def _resource_json(resource: Resource) -> dict[str, Any]:
    return {
        "path": resource.path,
        "params": [_param_json(p) for p in resource.params],
        "methods": [_method_json(m) for m in resource.methods],
        "resources": [_resource_json(c) for c in resource.children],
    }


def _method_json(method: Method) -> dict[str, Any]:
    return {
        "name": method.name,
        "id": method.id,
        "title": method.title,
        "doc": method.doc,
        "request": {
            "params": [_param_json(p) for p in method.params],
            "representations": list(method.accepts),
        },
        "responses": [
            {"status": list(reply.statuses), "representations": list(reply.media_types)}
            for reply in method.replies
        ],
    }


def _param_json(param: Param) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": param.name,
        "style": param.style,
        "type": param.type,
        "required": param.required,
        "repeating": param.repeating,
    }
    if param.doc:
        found["doc"] = param.doc
    if param.default is not None:
        found["default"] = param.default
    if param.options:
        found["options"] = list(param.options)
    return found
