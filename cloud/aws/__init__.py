"""AWS adapters: CloudWatch CPU per instance and the EC2 pool, through aiobotocore."""

from cloud.aws.clients import AwsClients, AwsError, AwsSettings
from cloud.aws.cloudwatch import cpu_by_instance
from cloud.aws.ec2 import ADDRESS_TAG, Instance, describe_pool, run_instances, terminate_instances

__all__ = [
    "ADDRESS_TAG",
    "AwsClients",
    "AwsError",
    "AwsSettings",
    "Instance",
    "cpu_by_instance",
    "describe_pool",
    "run_instances",
    "terminate_instances",
]
