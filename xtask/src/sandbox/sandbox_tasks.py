"""RunTask runs the task's container with Docker, for the sandbox's moto.

moto's RunTask runs nothing: every task "exits 0", so a migration that
would fail on AWS passes in the sandbox. Here each task started by RunTask
runs its essential container with `docker run` semantics, in a background
thread, and moto's task reports what the container did, as the ECS agent
would:

- Environment: the container definition's `environment`, then the
  containerOverrides' (an override wins), then `secrets`, each resolved when
  the task starts from moto's Secrets Manager or SSM Parameter Store, the
  `arn:...:secret:NAME:json-key:version-stage:version-id` form included
  (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-secrets-manager.html,
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/secrets-envvar-ssm-paramstore.html).
  Values reach `docker create` through its environment (`-e NAME`), never
  its command line.
- Command: the override's, else the definition's; entryPoint likewise
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerOverride.html).
- Image: an ECR reference (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO...)
  is pulled from the sandbox's registry, which holds the same digests (the
  sandbox's sync copies every push into moto's ECR); the registry's login
  is the one moto's ECR hands out, kept in a Docker config of the sandbox's
  own.
- Network: the host's (loopback), where the sandbox's RDS servers listen.
- Lifecycle: PENDING while the image is pulled and secrets resolved,
  RUNNING while the container runs, then STOPPED with the container's exit
  code, stopCode EssentialContainerExited and stoppedReason "Essential
  container in task exited". A secret or log group that cannot be used, or
  an image that cannot be pulled, stops the task before it runs, with the
  error codes ECS uses (ResourceInitializationError,
  CannotPullContainerError) and no exit code
  (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/stopped-task-error-codes.html,
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-lifecycle-explanation.html).
- StopTask: `docker stop` with the container's stopTimeout (30 s unless
  set): SIGTERM, then SIGKILL; the task stops with the caller's reason and
  stopCode UserInitiated
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopTask.html).
- Logs: with the awslogs driver, every line the container writes to stdout
  or stderr is an event in the stream `<prefix>/<container>/<task id>` of
  the definition's awslogs-group
  (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/using_awslogs.html);
  a missing group stops the task unless awslogs-create-group is "true".

Settings come from the environment `sandbox up` starts moto with:
XTASK_SANDBOX_DIR, XTASK_SANDBOX_NAME (labels the containers, so `sandbox
down` can remove any left behind), XTASK_SANDBOX_REGISTRY. Without
XTASK_SANDBOX_DIR moto's RunTask is left as it is.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading

from moto.core.utils import utcnow
from moto.ecs import models as ecs_models

SANDBOX_DIR = os.environ.get("XTASK_SANDBOX_DIR")
SANDBOX_NAME = os.environ.get("XTASK_SANDBOX_NAME", "sandbox")
REGISTRY = os.environ.get("XTASK_SANDBOX_REGISTRY")
# `sandbox down` removes containers with this label.
LABEL = "xtask-sandbox"
DEFAULT_STOP_TIMEOUT_SECONDS = 30
ECR_REFERENCE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/(?P<rest>.+)$")

_runs = []
_runs_lock = threading.Lock()
# moto's log streams are not thread-safe; every write from here holds this.
_logs_lock = threading.Lock()
_login_lock = threading.Lock()
_logged_in = set()


def install():
    if not SANDBOX_DIR:
        return
    original_run_task = ecs_models.EC2ContainerServiceBackend.run_task
    original_stop_task = ecs_models.EC2ContainerServiceBackend.stop_task
    managed_status = ecs_models.Task.status

    def run_task(self, cluster_str, task_definition_str, count, overrides, started_by, *args, **kwargs):
        launch_type = args[1] if len(args) > 1 else kwargs.get("launch_type")
        if launch_type != "FARGATE":
            register_capacity(self, cluster_str)
        tasks = original_run_task(self, cluster_str, task_definition_str, count, overrides, started_by, *args, **kwargs)
        task_definition = self.describe_task_definition(task_definition_str)
        for task in tasks:
            run = TaskRun(self, task, task_definition)
            task._sandbox_run = run
            track(run)
            threading.Thread(target=run.run, name=f"task {task.id}", daemon=True).start()
        return tasks

    def stop_task(self, cluster_str, task_str, reason):
        cluster = self._get_cluster(cluster_str)
        task_id = task_str.split("/")[-1]
        for arn, task in self.tasks.get(cluster.name, {}).items():
            run = getattr(task, "_sandbox_run", None)
            if arn.endswith(task_id) and run:
                run.stop(reason or "Task stopped by user")
                return task
        return original_stop_task(self, cluster_str, task_str, reason)

    # The task's lastStatus is the container's, not moto's timer.
    def get_status(self):
        run = getattr(self, "_sandbox_run", None)
        return run.status if run else managed_status.fget(self)

    def set_status(self, value):
        if getattr(self, "_sandbox_run", None) is None:
            managed_status.fset(self, value)

    ecs_models.EC2ContainerServiceBackend.run_task = run_task
    ecs_models.EC2ContainerServiceBackend.stop_task = stop_task
    ecs_models.Task.status = property(get_status, set_status)


def register_capacity(backend, cluster_str):
    """EC2 capacity: the ECS agent on each instance of the cluster's
    capacity providers' Auto Scaling groups registers the instance as a
    container instance when it boots
    (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/launch_container_instance.html).
    moto starts the groups' instances but runs no agent, so a task that
    needs one (RunTask on EC2 capacity) finds none; the sandbox registers
    the groups' InService instances first, as their agents would have."""
    from moto.autoscaling.models import autoscaling_backends

    cluster = backend._get_cluster(cluster_str)
    registered = {instance.ec2_instance_id for instance in backend.container_instances.get(cluster.name, {}).values()}
    groups = autoscaling_backends[backend.account_id][backend.region_name].autoscaling_groups
    for name in getattr(cluster, "capacity_providers", None) or []:
        provider = backend.capacity_providers.get(name)
        if provider is None:
            continue
        group_arn = (provider.auto_scaling_group_provider or {}).get("autoScalingGroupArn", "")
        group = groups.get(group_arn.split("autoScalingGroupName/")[-1])
        for state in group.instance_states if group else []:
            if state.lifecycle_state == "InService" and state.instance.id not in registered:
                backend.register_container_instance(cluster.name, state.instance.id)
                registered.add(state.instance.id)


def track(run):
    with _runs_lock:
        _runs.append(run)


def shutdown():
    """Removes every container (`sandbox down`)."""
    with _runs_lock:
        runs = list(_runs)
    for run in runs:
        run.stopping = True
    docker = shutil.which("docker")
    if not docker:
        return
    listed = subprocess.run(
        [docker, "ps", "-aq", "--filter", f"label={LABEL}={SANDBOX_NAME}"], capture_output=True, text=True
    )
    ids = listed.stdout.split()
    if ids:
        subprocess.run([docker, "rm", "-f", *ids], capture_output=True)


class TaskFailed(Exception):
    """The task stops before its container runs, with this reason."""


class TaskRun:
    """One task's container, from pull to exit."""

    def __init__(self, backend, task, task_definition, network="host"):
        """`network`: Docker's network for the container: "host" for a
        one-off task (it reaches the sandbox's databases on the host's
        addresses), "bridge" for a service's task, which needs an address of
        its own, as awsvpc gives it (see sandbox_services)."""
        self.backend = backend
        self.task = task
        self.network = network
        self.status = "PENDING"
        self.stopping = False
        self.stop_reason = None
        self.stop_code = "UserInitiated"
        self.container_name = f"{LABEL}-{SANDBOX_NAME}-{task.id}"
        self.docker = shutil.which("docker") or "docker"
        self.docker_config = os.path.join(SANDBOX_DIR, "docker-config")
        definitions = task_definition.container_definitions
        self.definition = next((c for c in definitions if c.get("essential", True)), definitions[0])
        self.override = next(
            (o for o in (task.overrides or {}).get("containerOverrides", []) if o.get("name") == self.definition["name"]),
            {},
        )
        self.model = next((c for c in task.containers if c.name == self.definition["name"]), task.containers[0])
        self.model.exitCode = None
        self.model.last_status = "PENDING"

    def run(self):
        try:
            log = self.log_destination()
            environment = self.environment()
            image = self.pull()
            self.create(image, environment)
            if self.stopping:
                raise TaskFailed(self.stop_reason)
            exit_code = self.start(log)
            self.finish(exit_code)
        except TaskFailed as failure:
            self.finish(None, reason=str(failure))
        except Exception as error:  # the task stops; moto keeps serving
            self.finish(None, reason=f"sandbox: {error}")
        finally:
            subprocess.run([self.docker, "rm", "-f", self.container_name], capture_output=True)

    def stop(self, reason, stop_code="UserInitiated"):
        """StopTask's stop (stopCode UserInitiated), or the service
        scheduler's (ServiceSchedulerInitiated: health checks, scale-in)."""
        if self.status == "STOPPED" or self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.stop_code = stop_code
        self.task.desired_status = "STOPPED"
        self.task.stopping_at = utcnow()
        timeout = int(self.definition.get("stopTimeout") or DEFAULT_STOP_TIMEOUT_SECONDS)
        # In the background: the API answers at once, the task reaches
        # STOPPED when the container has gone.
        threading.Thread(
            target=subprocess.run,
            args=([self.docker, "stop", "-t", str(timeout), self.container_name],),
            kwargs={"capture_output": True},
            daemon=True,
        ).start()

    def address(self):
        """The running container's own address (bridge network), or None."""
        if self.network == "host":
            return "127.0.0.1"
        inspected = subprocess.run(
            [self.docker, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.container_name],
            capture_output=True,
            text=True,
        )
        return inspected.stdout.strip() or None

    def log_destination(self):
        configuration = self.definition.get("logConfiguration") or {}
        if configuration.get("logDriver") != "awslogs":
            return None
        options = configuration.get("options") or {}
        group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
        if not group:
            return None
        from moto.logs.models import logs_backends

        logs = logs_backends[self.backend.account_id][self.backend.region_name]
        with _logs_lock:
            if group not in logs.groups:
                if options.get("awslogs-create-group") != "true":
                    raise TaskFailed(
                        "ResourceInitializationError: failed to validate logger args: "
                        f"The specified log group does not exist: {group}"
                    )
                logs.create_log_group(group, {})
        stream = f"{prefix}/{self.definition['name']}/{self.task.id}" if prefix else self.task.id
        return logs, group, stream

    def environment(self):
        variables = {}
        for source in (self.definition.get("environment") or [], self.override.get("environment") or []):
            for variable in source:
                variables[variable["name"]] = variable.get("value", "")
        for secret in self.definition.get("secrets") or []:
            try:
                variables[secret["name"]] = resolve_secret(self.backend, secret["valueFrom"])
            except Exception as error:
                raise TaskFailed(
                    "ResourceInitializationError: unable to pull secrets or registry auth: "
                    f"execution resource retrieval failed: unable to retrieve secret {secret['valueFrom']}: {error}"
                )
        return variables

    def pull(self):
        image = self.definition["image"]
        matched = ECR_REFERENCE.match(image)
        if matched and REGISTRY:
            image = f"{REGISTRY}/{matched.group('rest')}"
        if REGISTRY and image.startswith(REGISTRY + "/"):
            self.login()
        pulled = subprocess.run(
            [self.docker, "--config", self.docker_config, "pull", "--quiet", image], capture_output=True, text=True
        )
        if pulled.returncode != 0:
            raise TaskFailed(f"CannotPullContainerError: pull image {image}: {pulled.stderr.strip()}")
        return image

    def login(self):
        """The registry's only login is what moto's ECR GetAuthorizationToken
        answers: user AWS, password `<account>-auth-token`."""
        with _login_lock:
            if REGISTRY in _logged_in:
                return
            os.makedirs(self.docker_config, exist_ok=True)
            answer = subprocess.run(
                [self.docker, "--config", self.docker_config, "login", "-u", "AWS", "--password-stdin", REGISTRY],
                input=f"{self.backend.account_id}-auth-token",
                capture_output=True,
                text=True,
            )
            if answer.returncode != 0:
                raise TaskFailed(
                    f"ResourceInitializationError: unable to pull registry auth for {REGISTRY}: {answer.stderr.strip()}"
                )
            _logged_in.add(REGISTRY)

    def create(self, image, environment):
        command = self.override.get("command") or self.definition.get("command") or []
        entry_point = self.definition.get("entryPoint") or []
        arguments = [
            self.docker,
            "create",
            "--name",
            self.container_name,
            "--label",
            f"{LABEL}={SANDBOX_NAME}",
            "--label",
            f"{LABEL}-task={self.task.task_arn}",
            "--network",
            self.network,
        ]
        for name in environment:
            arguments += ["-e", name]
        if entry_point:
            arguments += ["--entrypoint", entry_point[0]]
        arguments.append(image)
        arguments += entry_point[1:] + command
        client_environment = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "DOCKER_HOST")}
        client_environment.update(environment)
        created = subprocess.run(arguments, capture_output=True, text=True, env=client_environment)
        if created.returncode != 0:
            raise TaskFailed(f"CannotCreateContainerError: {created.stderr.strip()}")

    def start(self, log):
        if log:
            logs, group, stream = log
            with _logs_lock:
                logs.create_log_stream(group, stream)
        process = subprocess.Popen(
            [self.docker, "start", "--attach", self.container_name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.status = "RUNNING"
        self.model.last_status = "RUNNING"
        self.task.started_at = utcnow()
        readers = [
            threading.Thread(target=forward, args=(pipe, log), daemon=True) for pipe in (process.stdout, process.stderr)
        ]
        for reader in readers:
            reader.start()
        process.wait()
        for reader in readers:
            reader.join()
        inspected = subprocess.run(
            [self.docker, "inspect", "--format", "{{.State.ExitCode}}", self.container_name],
            capture_output=True,
            text=True,
        )
        try:
            return int(inspected.stdout.strip())
        except ValueError:
            raise TaskFailed(f"CannotInspectContainerError: {inspected.stderr.strip()}")

    def finish(self, exit_code, reason=None):
        now = utcnow()
        self.model.exitCode = exit_code
        self.model.last_status = "STOPPED"
        if reason:
            self.model.reason = reason
        if self.stop_reason:
            self.task.stopped_reason = self.stop_reason
            self.task.stop_code = self.stop_code
        elif reason:
            self.task.stopped_reason = reason
            self.task.stop_code = "TaskFailedToStart"
        else:
            self.task.stopped_reason = "Essential container in task exited"
            self.task.stop_code = "EssentialContainerExited"
        self.task.desired_status = "STOPPED"
        self.task.execution_stopped_at = now
        self.task.stopped_at = now
        self.status = "STOPPED"
        print(
            f"sandbox_tasks: task {self.task.id} stopped (exit code {exit_code}): {self.task.stopped_reason}",
            file=sys.stderr,
        )


def forward(pipe, log):
    """Each line the container writes becomes one log event."""
    for raw in iter(pipe.readline, b""):
        message = raw.decode("utf-8", errors="replace").rstrip("\n")
        if not log:
            continue
        logs, group, stream = log
        event = {"timestamp": int(utcnow().timestamp() * 1000), "message": message}
        with _logs_lock:
            logs.put_log_events(group, stream, [event])
    pipe.close()


def resolve_secret(backend, value_from):
    """The value ECS injects for one `secrets` entry."""
    account, region = backend.account_id, backend.region_name
    if value_from.startswith("arn:"):
        parts = value_from.split(":")
        service, region, account = parts[2], parts[3] or region, parts[4] or account
        if service == "secretsmanager":
            secret_arn = ":".join(parts[:7])
            json_key, version_stage, version_id = (parts[7:] + ["", "", ""])[:3]
            return secrets_manager_value(account, region, secret_arn, json_key, version_stage, version_id)
        if service == "ssm":
            # arn:aws:ssm:REGION:ACCOUNT:parameter/NAME; a name with a path
            # keeps its leading slash.
            name = ":".join(parts[5:])[len("parameter") :]
            name = name if name.count("/") > 1 else name.lstrip("/")
            return ssm_value(account, region, name)
        raise ValueError(f"{service} is not a secret store ECS reads")
    # A bare name is a Parameter Store parameter in the task's region.
    return ssm_value(account, region, value_from)


def secrets_manager_value(account, region, secret_arn, json_key, version_stage, version_id):
    from moto.secretsmanager.models import secretsmanager_backends

    answer = secretsmanager_backends[account][region].get_secret_value(
        secret_arn, version_id or None, version_stage or None
    )
    text = answer.get("SecretString")
    if text is None:
        raise ValueError("the secret has no string value")
    if not json_key:
        return text
    document = json.loads(text)
    if json_key not in document:
        raise ValueError(f"retrieved secret from Secrets Manager did not contain json key {json_key}")
    value = document[json_key]
    return value if isinstance(value, str) else json.dumps(value)


def ssm_value(account, region, name):
    from moto.ssm.models import ssm_backends

    parameter = ssm_backends[account][region].get_parameter(name)
    if parameter is None:
        raise ValueError(f"parameter {name} does not exist")
    return parameter.value
