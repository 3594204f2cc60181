"""3D geometry, object instances, coarse-correspondence marks and spatial relations (numpy/open3d/OpenCV, no ROS).

Entry point: :func:`oryx_ros.spatial.scene_graph.build_scene` (frames + camera mounts [+ robot poses] →
objects, relations, marked views). Modules, in pipeline order:

* ``geometry``: poses (URDF rpy, ROS xyzw quaternions, the node's ``mount``), back-projection, fusion
* ``segmentation``: support planes, clusters, per-instance boxes and per-view visibility
* ``correspondences``: prominent instances, stable ids (``InstanceTracker``), numbered badges
* ``relations``: ``SceneObject`` / ``SpatialRelation`` (mirroring the messages) and the predicates
* ``prompting``: the prompt that explains the marks, parsers for ids and relations in answers
* ``synthetic_scene``: rendered RGB-D scenes with ground truth, ``oryx-ros make-scene``
* ``evaluation``, ``visualize``: scores against ground truth, pictures for the docs

Submodules are not imported here: open3d takes about a second to import.
"""
