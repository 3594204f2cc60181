"""Conversions from the spatial core's results to oryx_ros / visualization_msgs messages."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from oryx_ros.msg import SceneGraph, SceneObject, SpatialRelation


def _colour(object_id: int, alpha: float = 0.6) -> ColorRGBA:
    r, g, b = colorsys.hsv_to_rgb((object_id * 0.618034) % 1.0, 0.85, 0.95)  # golden-ratio hues stay distinct
    return ColorRGBA(r=r, g=g, b=b, a=alpha)


def scene_graph_message(header: Header, objects: Sequence[Any], relations: Sequence[Any],
                        available: bool = True, reason: str = "") -> SceneGraph:
    """Objects/relations of ``oryx_ros.spatial`` (same field names as the messages) → SceneGraph."""
    graph = SceneGraph(header=header, available=available, reason=reason)
    for obj in objects:
        message = SceneObject(id=int(obj.id), label=str(obj.label), confidence=float(obj.confidence),
                              points=int(getattr(obj, "points", 0)), cameras=list(obj.cameras))
        message.position.x, message.position.y, message.position.z = (float(v) for v in obj.position)
        message.size.x, message.size.y, message.size.z = (float(v) for v in obj.size)
        graph.objects.append(message)
    for relation in relations:
        graph.relations.append(SpatialRelation(
            subject_id=int(relation.subject_id), predicate=str(relation.predicate), object_id=int(relation.object_id),
            distance=float(relation.distance), confidence=float(relation.confidence), source=str(relation.source),
            # "" stays "": the model judged such relations from the images, not in a known frame.
            viewpoint=str(getattr(relation, "viewpoint", header.frame_id))))
    return graph


def scene_markers(graph: SceneGraph, lifetime_s: float = 0.0) -> MarkerArray:
    """RViz markers: a translucent box and an id label per object, a line per geometric relation."""
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
                       action=Marker.ADD, text=f"{obj.id}: {obj.label}", color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                       lifetime=lifetime)
        label.pose.position = Point(x=obj.position.x, y=obj.position.y, z=obj.position.z + obj.size.z / 2 + 0.08)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.08
        markers.markers += [box, label]
    lines = Marker(header=graph.header, ns="relations", id=0, type=Marker.LINE_LIST, action=Marker.ADD,
                   color=ColorRGBA(r=1.0, g=1.0, b=0.2, a=0.8), lifetime=lifetime)
    lines.pose.orientation.w = 1.0
    lines.scale.x = 0.01
    # One line per related pair: several predicates often hold between the same two objects.
    pairs = {tuple(sorted((r.subject_id, r.object_id))) for r in graph.relations
             if r.subject_id in centres and r.object_id in centres and r.subject_id != r.object_id}
    for a, b in sorted(pairs):
        lines.points += [centres[a], centres[b]]
    if lines.points:
        markers.markers.append(lines)
    return markers
