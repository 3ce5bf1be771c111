"""Reading one sample from the app's ``/metrics``."""

from __future__ import annotations

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families


def metric_value(client: FlaskClient, name: str, labels: dict[str, str]) -> float:
    """The value of the sample ``name`` whose labels include ``labels``; 0 when there is none."""
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
