"""Scene graph and RViz marker messages built from the spatial core's results."""

from __future__ import annotations

from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from oryx_ros.ros.scene_messages import scene_graph_message, scene_markers
from oryx_ros.spatial.relations import SceneObject, SpatialRelation


def test_graph_and_markers_carry_every_object_and_one_line_per_related_pair() -> None:
    objects = [SceneObject(1, "red object", (1.0, 0.5, 0.2), (0.1, 0.2, 0.3), 0.9, 120, ("cam0", "cam1")),
               SceneObject(2, "blue object", (1.5, -0.5, 0.2), (0.2, 0.2, 0.2), 0.8, 90, ("cam1",)),
               SceneObject(3, "green object", (2.0, 0.0, 0.6), (0.1, 0.1, 0.1), 0.7, 40, ("cam0",))]
    relations = [SpatialRelation(1, "left_of", 2, 1.12, 0.9), SpatialRelation(1, "near", 2, 1.12, 0.6),
                 SpatialRelation(2, "right_of", 1, 1.12, 0.9), SpatialRelation(3, "above", 2, 0.7, 0.8),
                 SpatialRelation(1, "on", 3, 0.0, 0.5, source="model", viewpoint="")]
    graph = scene_graph_message(Header(frame_id="base_link"), objects, relations)
    assert [o.id for o in graph.objects] == [1, 2, 3] and graph.available
    assert graph.objects[0].position.y == 0.5 and graph.objects[0].size.z == 0.3
    assert list(graph.objects[1].cameras) == ["cam1"] and graph.objects[0].points == 120
    assert [r.source for r in graph.relations].count("model") == 1
    assert graph.relations[0].viewpoint == "base_link" and graph.relations[-1].viewpoint == ""

    markers = scene_markers(graph).markers
    assert markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers if m.type == Marker.CUBE]
    labels = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert [b.id for b in boxes] == [1, 2, 3] and labels[0].text == "1: red object"
    assert boxes[2].scale.x == 0.1 and boxes[0].pose.position.x == 1.0
    (lines,) = [m for m in markers if m.type == Marker.LINE_LIST]
    assert len(lines.points) == 2 * 3  # pairs {1,2}, {2,3}, {1,3}, each once
    assert all(m.header.frame_id == "base_link" for m in markers)
