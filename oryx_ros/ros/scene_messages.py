"""Conversions from the spatial core's results to oryx_ros / visualization_msgs messages.

The markers draw exactly what the SceneGraph message carries: a box and an "id: label" text per object,
and per related pair one line (yellow: geometry, cyan: only the model asserted it) with the pair's
relations written at its middle ("3 on 5", "3 near 5"), so a selection (``spatial.relations_per_object``,
``spatial.relations_inverse``) shows in RViz as it is published.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from oryx_ros.msg import SceneGraph, SceneObject, SpatialRelation

GEOMETRY_LINE = ColorRGBA(r=1.0, g=1.0, b=0.2, a=0.8)
MODEL_LINE = ColorRGBA(r=0.2, g=0.9, b=1.0, a=0.8)
WHITE = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def _colour(object_id: int, alpha: float = 0.6) -> ColorRGBA:
    r, g, b = colorsys.hsv_to_rgb((object_id * 0.618034) % 1.0, 0.85, 0.95)  # golden-ratio hues stay distinct
    return ColorRGBA(r=r, g=g, b=b, a=alpha)


def scene_graph_message(header: Header, objects: Sequence[Any], relations: Sequence[Any],
                        available: bool = True, reason: str = "", *,
                        views_left_out: Mapping[str, str] | None = None,
                        projected_views: Sequence[str] = ()) -> SceneGraph:
    """Objects/relations of ``oryx_ros.spatial`` (same field names as the messages) → SceneGraph.

    ``views_left_out``: view → why it is not in the scene; ``projected_views``: RGB-only views marked by
    projection.
    """
    graph = SceneGraph(header=header, available=available, reason=reason)
    for obj in objects:
        message = SceneObject(id=int(obj.id), label=str(obj.label), confidence=float(obj.confidence),
                              points=int(getattr(obj, "points", 0)), cameras=list(obj.cameras),
                              colour=str(getattr(obj, "colour", "")),
                              label_source=str(getattr(obj, "label_source", SceneObject.LABEL_SOURCE_COLOUR)))
        message.position.x, message.position.y, message.position.z = (float(v) for v in obj.position)
        message.size.x, message.size.y, message.size.z = (float(v) for v in obj.size)
        graph.objects.append(message)
    for relation in relations:
        graph.relations.append(SpatialRelation(
            subject_id=int(relation.subject_id), predicate=str(relation.predicate), object_id=int(relation.object_id),
            distance=float(relation.distance), confidence=float(relation.confidence), source=str(relation.source),
            # "" stays "": the model judged such relations from the images, not in a known frame.
            viewpoint=str(getattr(relation, "viewpoint", header.frame_id))))
    left_out = dict(views_left_out or {})
    graph.views_left_out = list(left_out)
    graph.views_left_out_reasons = [str(why) for why in left_out.values()]
    graph.projected_views = [str(view) for view in projected_views]
    return graph


def scene_graph_of(header: Header, scene: Any, relations: Sequence[Any] | None = None) -> SceneGraph:
    """SceneGraph of a ``scene_graph.SceneResult`` (its relations unless ``relations`` is given)."""
    return scene_graph_message(header, scene.objects, scene.relations if relations is None else relations,
                               scene.available, scene.reason, views_left_out=scene.views_left_out,
                               projected_views=scene.projected_views)


def relation_text(relation: Any) -> str:
    """"3 in front of 5" for the relation 3 in_front_of 5."""
    return f"{relation.subject_id} {relation.predicate.replace('_', ' ')} {relation.object_id}"


def scene_markers(graph: SceneGraph, lifetime_s: float = 0.0) -> MarkerArray:
    """RViz markers of exactly what ``graph`` holds (see the module docstring)."""
    markers = MarkerArray()
    markers.markers.append(Marker(header=graph.header, action=Marker.DELETEALL))
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    centres = {}
    for obj in graph.objects:
        centres[obj.id] = obj.position
        box = Marker(header=graph.header, ns="objects", id=int(obj.id), type=Marker.CUBE, action=Marker.ADD,
                     color=_colour(obj.id), lifetime=lifetime)
        box.pose.position = obj.position
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = max(obj.size.x, 0.01), max(obj.size.y, 0.01), max(obj.size.z, 0.01)
        label = Marker(header=graph.header, ns="labels", id=int(obj.id), type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, text=f"{obj.id}: {obj.label}", color=WHITE, lifetime=lifetime)
        label.pose.position = Point(x=obj.position.x, y=obj.position.y, z=obj.position.z + obj.size.z / 2 + 0.08)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.08
        markers.markers += [box, label]
    # One line per related pair (several predicates often hold between the same two objects), with all of
    # the pair's published relations as its text; a pair only the model asserted gets the model's colour.
    pairs: dict[tuple[int, int], list[Any]] = {}
    for r in graph.relations:
        if r.subject_id in centres and r.object_id in centres and r.subject_id != r.object_id:
            pairs.setdefault((min(r.subject_id, r.object_id), max(r.subject_id, r.object_id)), []).append(r)
    lines = {source: Marker(header=graph.header, ns=f"relations_{source}" if source != "geometry" else "relations",
                            id=0, type=Marker.LINE_LIST, action=Marker.ADD, color=colour, lifetime=lifetime)
             for source, colour in (("geometry", GEOMETRY_LINE), ("model", MODEL_LINE))}
    for index, ((a, b), relations) in enumerate(sorted(pairs.items())):
        source = "geometry" if any(r.source != SpatialRelation.SOURCE_MODEL for r in relations) else "model"
        lines[source].points += [centres[a], centres[b]]
        text = Marker(header=graph.header, ns="relation_labels", id=index, type=Marker.TEXT_VIEW_FACING,
                      action=Marker.ADD, text="\n".join(relation_text(r) for r in relations),
                      color=lines[source].color, lifetime=lifetime)
        text.pose.position = Point(x=(centres[a].x + centres[b].x) / 2, y=(centres[a].y + centres[b].y) / 2,
                                   z=(centres[a].z + centres[b].z) / 2)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.04
        markers.markers.append(text)
    for line in lines.values():
        line.pose.orientation.w = 1.0
        line.scale.x = 0.01
        if line.points:
            markers.markers.append(line)
    return markers
