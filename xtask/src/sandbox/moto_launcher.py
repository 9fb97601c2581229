"""Starts moto for `cargo xtask sandbox up`, with what the sandbox needs of
AWS that moto does not simulate.

This file fills in what moto leaves out of answers the AWS SDK and Terraform
need. Four modules, written beside it, make the sandbox fail the way AWS
fails: `sandbox_services` carries out an ECS service's deployments with real
containers, health checks, the circuit breaker and a load balancer on
loopback; `sandbox_tasks` runs every RunTask's container with Docker, so a
migration task really migrates (or really fails) and its exit code and
output are the container's; `sandbox_rds` backs every RDS instance with a
real PostgreSQL server; `sandbox_validation` rejects, as AWS does, a request
to ECS, ECR, DynamoDB or CloudWatch Logs that does not fit the service's
model.

It is only ever started by the sandbox; nothing else in the product knows
moto exists. Arguments are moto_server's (-H HOST -p PORT).
"""

import os
import sys

from moto.ecs import models as ecs_models

# RunTask of a Fargate task (the deploy's one-off migration task) fails in
# moto with HTTP 500 in two places: it sums container memory that Fargate
# task definitions leave to the task level (None), and it reads the network
# interface's private DNS name, which only exists in VPCs with DNS
# hostnames. Both are filled in here; the task then steps to STOPPED with
# exit code 0.
_original_requirements = ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements


def _calculate_task_resource_requirements(task_definition):
    saved = task_definition.container_definitions
    filled = []
    for container in saved:
        container = dict(container)
        for key in ("cpu", "memory"):
            if container.get(key) is None:
                container[key] = 0
        filled.append(container)
    task_definition.container_definitions = filled
    try:
        return _original_requirements(task_definition)
    finally:
        task_definition.container_definitions = saved


# A static method in moto.
ecs_models.EC2ContainerServiceBackend._calculate_task_resource_requirements = staticmethod(
    _calculate_task_resource_requirements
)

# A task's containers report cpu and memory as strings in the ECS API; moto
# copies the task definition's integers, which the AWS SDK refuses.
_original_container_init = ecs_models.Container.__init__


def _container_init(self, task_def):
    _original_container_init(self, task_def)
    for attribute in ("cpu", "memory"):
        value = getattr(self, attribute)
        if value is not None:
            setattr(self, attribute, str(value))


ecs_models.Container.__init__ = _container_init

from moto.ec2.models.elastic_network_interfaces import NetworkInterface  # noqa: E402

NetworkInterface.private_dns_name = None


# Every RDS instance gets the same DbiResourceId in moto, so a second
# environment in one sandbox (promotion from one to the other) confuses
# Terraform, which finds instances by it. Make it unique.
import random  # noqa: E402
import string  # noqa: E402

from moto.rds import models as rds_models  # noqa: E402

_original_db_instance_init = rds_models.DBInstance.__init__


def _db_instance_init(self, *args, **kwargs):
    _original_db_instance_init(self, *args, **kwargs)
    alphabet = string.ascii_uppercase + string.digits
    self.dbi_resource_id = "db-" + "".join(random.choice(alphabet) for _ in range(26))


rds_models.DBInstance.__init__ = _db_instance_init

# RunTask runs the task's container for real: see sandbox_tasks below.

# ECR scan findings as AWS reports them for the images the sandbox holds.
# moto answers every scan of an image without configured results with a
# fixed fake HIGH finding. Real ECR cannot scan an image that has no OS
# package database, such as our `FROM scratch` runtime image: basic scanning
# ends FAILED with UnsupportedImageError (ECR user guide, "Troubleshooting
# image scanning in Amazon ECR"; enhanced scanning says UNSUPPORTED_IMAGE).
# Every image in the sandbox is such an image (the app's, and the one-file
# images tests import), so that is the answer unless a test configured
# findings through moto's API (/moto-api/static/ecr/scan-finding-results).
from moto.ecr import models as ecr_models  # noqa: E402

_original_describe_image_scan_findings = ecr_models.ECRBackend.describe_image_scan_findings


def describe_image_scan_findings(self, registry_id, repository_name, image_id):
    answer = _original_describe_image_scan_findings(self, registry_id, repository_name, image_id)
    findings = (answer.get("imageScanFindings") or {}).get("findings") or []
    if any(finding.get("name") == "CVE-9999-9999" for finding in findings):
        answer = {key: value for key, value in answer.items() if key != "imageScanFindings"}
        answer["imageScanStatus"] = {
            "status": "FAILED",
            "description": "UnsupportedImageError: The operating system and/or package manager are not supported.",
        }
    return answer


ecr_models.ECRBackend.describe_image_scan_findings = describe_image_scan_findings

# Scan on push: moto records a repository's scanOnPush and never acts on
# it, so every pushed image stays without a scan (ScanNotFoundException)
# until someone calls StartImageScan. In ECR a repository with scanOnPush
# scans each image as it is pushed ("Scanning images for OS
# vulnerabilities in Amazon ECR": "Scan on push"), so a client reading the
# findings right after the push finds the scan under way or done, and the
# one-scan-a-day limit of StartImageScan then counts it. A push is a
# PutImage here (the sandbox's sync hands every manifest pushed to its
# registry to ECR with PutImage), so that is where the scan starts.
import datetime as _datetime  # noqa: E402

_original_put_image = ecr_models.ECRBackend.put_image


def put_image(self, repository_name, *args, **kwargs):
    image = _original_put_image(self, repository_name, *args, **kwargs)
    repository = self.repositories.get(repository_name)
    configuration = getattr(repository, "image_scanning_configuration", None) or {}
    if configuration.get("scanOnPush") and not image.last_scan:
        image.last_scan = _datetime.datetime.today()
    return image


ecr_models.ECRBackend.put_image = put_image



# RDS: DescribeDBParameters answers without each parameter's Source, and
# Terraform's AWS provider keeps only parameters whose Source is "user"
# (the ones a parameter group sets), so a group's parameters (rds.force_ssl
# and the logging settings of the environment's group) would show as
# missing on every plan and never converge. Parameters set through the API
# are the user's, as on AWS.
_original_update_parameters = rds_models.DBParameterGroup.update_parameters


def update_parameters(self, new_parameters):
    _original_update_parameters(self, new_parameters)
    for parameter in self.parameters.values():
        parameter.setdefault("Source", "user")


rds_models.DBParameterGroup.update_parameters = update_parameters


import signal  # noqa: E402

import sandbox_rds  # noqa: E402
import sandbox_services  # noqa: E402
import sandbox_tasks  # noqa: E402
import sandbox_validation  # noqa: E402

sandbox_rds.install()
sandbox_tasks.install()
sandbox_services.install()
sandbox_validation.install()


def _shutdown(signum, frame):
    """`sandbox down` sends SIGTERM: the containers and database servers
    started for moto's resources go with it (containers are the Docker
    daemon's children, so no process-group signal reaches them)."""
    try:
        sandbox_services.shutdown()
        sandbox_tasks.shutdown()
        sandbox_rds.shutdown()
    finally:
        os._exit(0)


signal.signal(signal.SIGTERM, _shutdown)
signal.signal(signal.SIGINT, _shutdown)

from moto.server import main  # noqa: E402  (after the patch, on purpose)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
