"""Fleet serving (issue 10): the Ray Serve server (`oryx-ros serve`) and its Python client, `RemoteEngine`.

No ROS imports here; the node picks `RemoteEngine` when `model.backend` is `remote`.
"""
