"""Scene graph and RViz marker messages built from the spatial core's results."""

from __future__ import annotations

from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from oryx_ros.msg import SceneObject as SceneObjectMsg
from oryx_ros.ros.scene_messages import scene_graph_message, scene_graph_of, scene_markers
from oryx_ros.spatial.relations import SceneObject, SpatialRelation
from oryx_ros.spatial.scene_graph import SceneResult


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
    labels = [m for m in markers if m.ns == "labels"]
    assert [b.id for b in boxes] == [1, 2, 3] and labels[0].text == "1: red object"
    assert boxes[2].scale.x == 0.1 and boxes[0].pose.position.x == 1.0
    lines = {m.ns: m for m in markers if m.type == Marker.LINE_LIST}
    assert len(lines["relations"].points) == 2 * 2  # geometry pairs {1,2}, {2,3}, each once
    assert len(lines["relations_model"].points) == 2  # {1,3}: only the model said "1 on 3"
    texts = {m.text for m in markers if m.ns == "relation_labels"}
    assert texts == {"1 left of 2\n1 near 2\n2 right of 1", "3 above 2", "1 on 3"}
    assert all(m.header.frame_id == "base_link" for m in markers)


def test_graph_carries_colour_label_source_left_out_views_and_draws_what_it_holds() -> None:
    objects = [SceneObject(1, "mug", (1.0, 0.0, 0.8), (0.1, 0.1, 0.1), 0.9, 50, ("cam0", "rgb"), colour="white",
                           label_source="model"),
               SceneObject(2, "brown object", (1.0, 0.0, 0.4), (0.8, 0.6, 0.75), 0.9, 900, ("cam0",), colour="brown"),
               SceneObject(3, "red object", (1.0, 0.1, 0.05), (0.1, 0.1, 0.1), 0.8, 40, ("cam0",), colour="red")]
    scene = SceneResult(True, "", "base_link", "base_link", objects=objects,
                        relations=[SpatialRelation(1, "on", 2, 0.4, 0.9), SpatialRelation(3, "under", 2, 0.4, 0.8),
                                   SpatialRelation(2, "in", 2, 0.0, 0.5)],  # a self-relation is not drawn
                        projected_views=["rgb"], views_left_out={"side": "no depth and no mount"})
    graph = scene_graph_of(Header(frame_id="base_link"), scene)
    assert [(o.label, o.colour, o.label_source) for o in graph.objects] == [
        ("mug", "white", SceneObjectMsg.LABEL_SOURCE_MODEL), ("brown object", "brown", "colour"),
        ("red object", "red", SceneObjectMsg.LABEL_SOURCE_COLOUR)]
    assert list(graph.views_left_out) == ["side"] and list(graph.views_left_out_reasons) == ["no depth and no mount"]
    assert list(graph.projected_views) == ["rgb"] and list(graph.objects[0].cameras) == ["cam0", "rgb"]
    markers = scene_markers(graph).markers
    assert sorted(m.text for m in markers if m.ns == "relation_labels") == ["1 on 2", "3 under 2"]
    (lines,) = [m for m in markers if m.type == Marker.LINE_LIST]
    assert len(lines.points) == 4
