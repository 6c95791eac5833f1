"""CPUUtilization per EC2 instance from CloudWatch ``GetMetricData``, batched.

One request carries up to 500 metric queries (the API's limit), so a pool of any size
costs one or a few calls per poll. Each instance's figure is its newest datapoint in
the lookback window; an instance with no datapoint maps to None ("keep the last
weight", the strategist decides).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from cloud.aws.clients import AWS_ERRORS, AwsClients, as_aws_error

MAX_QUERIES = 500


async def cpu_by_instance(
    clients: AwsClients,
    instance_ids: Sequence[str],
    *,
    period: int = 60,
    lookback: int = 300,
    now: dt.datetime | None = None,
) -> dict[str, float | None]:
    """Newest average CPUUtilization (percent) per instance id; None when there is no data."""
    result: dict[str, float | None] = {iid: None for iid in instance_ids}
    if not instance_ids:
        return result
    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(seconds=lookback)
    client = await clients.client("cloudwatch")
    ids = list(dict.fromkeys(instance_ids))
    for offset in range(0, len(ids), MAX_QUERIES):
        batch = ids[offset:offset + MAX_QUERIES]
        queries = [
            {
                "Id": f"m{i}",  # must start with a lower-case letter
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/EC2",
                        "MetricName": "CPUUtilization",
                        "Dimensions": [{"Name": "InstanceId", "Value": iid}],
                    },
                    "Period": period,
                    "Stat": "Average",
                },
                "ReturnData": True,
            }
            for i, iid in enumerate(batch)
        ]
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "MetricDataQueries": queries, "StartTime": start, "EndTime": end + dt.timedelta(seconds=period),
                "ScanBy": "TimestampDescending",
            }
            if token:
                kwargs["NextToken"] = token
            try:
                response = await client.get_metric_data(**kwargs)
            except AWS_ERRORS as exc:
                raise as_aws_error("CloudWatch GetMetricData", exc) from exc
            for series in response.get("MetricDataResults", []):
                index = int(series["Id"][1:])
                pairs = sorted(zip(series.get("Timestamps", []), series.get("Values", [])), reverse=True)
                if pairs and result[batch[index]] is None:
                    result[batch[index]] = float(pairs[0][1])
            token = response.get("NextToken")
            if not token:
                break
    return result
