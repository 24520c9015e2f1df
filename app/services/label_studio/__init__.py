"""Label Studio ML-backend compatibility: Label Studio's protocol mapped onto the service.

- ``config``: parse Label Studio's label config, check it against the project;
- ``tasks``: Label Studio tasks -> items (importing unknown ones), ``media`` fetches their images;
- ``scoring``: the model version and the prediction scores that encode the service's order;
- ``predictions``: the proxy's per-item predictions, written by the ``select_round`` job;
- ``backend``: ``/setup`` and ``/predict``; ``webhook``: the webhook events.
"""
