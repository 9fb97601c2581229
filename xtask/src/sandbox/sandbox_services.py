"""ECS services whose tasks are real containers, behind a load balancer on
loopback, for the sandbox's moto.

moto decides a service's rollout once, when the service is created, runs no
task, and creates no deployment on UpdateService: every rollout "completes",
whatever the image does. Here a service's deployments are carried out as ECS
carries them out, with the same containers `sandbox_tasks` runs for RunTask:

- Deployments. CreateService and an UpdateService with a new task definition
  (or forceNewDeployment) start a PRIMARY deployment IN_PROGRESS; the one
  before it becomes ACTIVE. The PRIMARY deployment's tasks are started until
  it has desiredCount of them; it is COMPLETED when they all run (and, behind
  a load balancer, pass its health check) and the older deployments' tasks
  are drained and stopped; the older deployments are then gone
  (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Deployment.html).
- Tasks. Each is a container of the task definition's essential container
  (image, environment, secrets, command, logs: see sandbox_tasks), on
  Docker's bridge network: as with awsvpc, every task has an address of its
  own and listens on its containerPort there. A task whose container exits
  stops with "Essential container in task exited" and the exit code.
- Health checks, as the target group is configured (path, matcher, interval,
  timeout, healthy and unhealthy thresholds), from the moment the task runs.
  A task is in service after `healthy threshold` passes in a row; after
  `unhealthy threshold` failures in a row, and once the service's
  healthCheckGracePeriodSeconds since the task started have passed, ECS
  stops it: "Task failed ELB health checks in (target-group ARN)"
  (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/target-group-health-checks.html,
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-load-balancing.html).
- Every task of the PRIMARY deployment that stops counts in its failedTasks.
  The deployment circuit breaker, when the service enables it, fails the
  deployment when failedTasks reaches the threshold: 0.5 x desiredCount,
  rounded up, at least 3 and at most 200; with rollback on, a new deployment
  of the last COMPLETED task definition takes over
  (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-circuit-breaker.html).
  While a deployment cannot get its tasks running, ECS throttles launches;
  here a task is started again at once while the breaker counts, then with
  a delay that doubles up to 5 minutes.
- Events, newest first, worded as ECS words them ("(service NAME) has
  started 1 tasks: (task ID).", "... has reached a steady state.",
  "... deployment failed: tasks failed to start.", "... rolling back to
  deployment ...").
- The load balancer. Every application load balancer gets a small proxy on
  a free loopback port, and its DNSName is `127.0.0.1:PORT`, so the
  environment's URL reaches it. That one port serves the balancer's HTTP
  and HTTPS listeners (told apart by the TLS handshake): HTTPS with the
  listener's ACM certificate and its security policy's lowest TLS version,
  and each listener's default action (forward, redirect, fixed-response).
  Forward sends each request to a healthy target of the action's target
  groups, round robin, adding the X-Forwarded-For/-Proto/-Port headers an
  ALB adds; with no healthy target it answers 503, and 502 when the target
  does not answer
  (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-troubleshooting.html).

Only `sandbox up` starts moto with this (XTASK_SANDBOX_DIR set); nothing in
the product knows it exists.
"""

import http.client
import http.server
import itertools
import math
import os
import socket
import ssl
import sys
import threading
import time

from moto.acm import models as acm_models
from moto.core.utils import utcnow
from moto.ecs import models as ecs_models
from moto.ecs import responses as ecs_responses
from moto.elbv2 import models as elbv2_models
from moto.moto_api._internal import mock_random

import sandbox_tasks

SANDBOX_DIR = os.environ.get("XTASK_SANDBOX_DIR")
TICK_SECONDS = 1.0
# ECS throttles the launches of a service whose tasks keep failing; the
# sandbox retries at once while the circuit breaker counts, then backs off.
RELAUNCH_BACKOFF_START_SECONDS = 10
RELAUNCH_BACKOFF_MAX_SECONDS = 300

_controllers = {}
_controllers_lock = threading.Lock()
# Target group ARN -> set of (address, port) in service (healthy).
_in_service = {}
_in_service_lock = threading.Lock()
_proxies = []


def install():
    if not SANDBOX_DIR:
        return
    original_create_response = ecs_responses.EC2ContainerServiceResponse.create_service
    original_update = ecs_models.EC2ContainerServiceBackend.update_service
    original_delete = ecs_models.EC2ContainerServiceBackend.delete_service
    original_list_tasks = ecs_models.EC2ContainerServiceBackend.list_tasks
    original_create_load_balancer = elbv2_models.ELBv2Backend.create_load_balancer

    def create_service(self):
        answer = original_create_response(self)
        cluster = self._get_param("cluster", "default")
        name = self._get_param("serviceName")
        service = self.ecs_backend._get_service(cluster, name)
        # moto keeps neither; ECS answers with both.
        service.deployment_configuration = self._get_param("deploymentConfiguration") or {}
        service.health_check_grace_period_seconds = self._get_param("healthCheckGracePeriodSeconds") or 0
        if service.deployment_controller.get("type", "ECS") == "ECS" and service.task_definition:
            controller = ServiceController(self.ecs_backend, service)
            with _controllers_lock:
                _controllers[service.arn] = controller
            controller.start_deployment(service.deployments[0] if service.deployments else None)
            controller.start()
        return answer

    def update_service(self, service_properties):
        cluster = service_properties.get("cluster", "default")
        name = service_properties.get("service", "").split("/")[-1]
        force = bool(service_properties.get("force_new_deployment"))
        before = self._get_service(cluster, name).task_definition
        service = original_update(self, service_properties)
        with _controllers_lock:
            controller = _controllers.get(service.arn)
        if controller is None:
            return service
        if service.task_definition != before or force:
            controller.start_deployment(None)
        else:
            controller.desired_changed()
        return service

    def delete_service(self, cluster_name, service_name, force):
        service = original_delete(self, cluster_name, service_name, force)
        with _controllers_lock:
            controller = _controllers.pop(service.arn, None)
        if controller:
            controller.stop_all("Service deleted")
        return service

    def list_tasks(self, cluster_str=None, container_instance=None, family=None, started_by=None, service_name=None, desiredStatus=None):
        tasks = original_list_tasks(self, cluster_str, container_instance, family, started_by, service_name, desiredStatus)
        if service_name:
            # moto ignores serviceName; ECS lists the service's tasks.
            group = "service:" + service_name.split("/")[-1]
            tasks = [task for task in tasks if task.group == group]
        return tasks

    def create_load_balancer(self, *args, **kwargs):
        balancer = original_create_load_balancer(self, *args, **kwargs)
        if getattr(balancer, "type", "application") == "application":
            proxy = LoadBalancerProxy(self, balancer.arn)
            _proxies.append(proxy)
            balancer.dns_name = proxy.address
        return balancer

    ecs_responses.EC2ContainerServiceResponse.create_service = create_service
    ecs_models.EC2ContainerServiceBackend.update_service = update_service
    ecs_models.EC2ContainerServiceBackend.delete_service = delete_service
    ecs_models.EC2ContainerServiceBackend.list_tasks = list_tasks
    elbv2_models.ELBv2Backend.create_load_balancer = create_load_balancer


def shutdown():
    with _controllers_lock:
        controllers = list(_controllers.values())
    for controller in controllers:
        controller.stopping = True
    for proxy in _proxies:
        proxy.server.shutdown()


def circuit_breaker_threshold(desired_count):
    """ECS: half the desired count, rounded up, at least 3, at most 200."""
    return min(max(math.ceil(0.5 * desired_count), 3), 200)


class ServiceTask:
    """One task of a deployment: its container and its health."""

    def __init__(self, controller, deployment, run):
        self.controller = controller
        self.deployment = deployment
        self.run = run
        self.address = None
        self.started_running = None
        self.passes = 0
        self.failures = 0
        self.healthy = False
        self.next_check = 0.0
        self.stopped_by_scheduler = False
        self.counted = False

    @property
    def id(self):
        return self.run.task.id

    def live(self):
        return self.run.status != "STOPPED"


class ServiceController(threading.Thread):
    """Carries out one service's deployments, one tick a second."""

    def __init__(self, backend, service):
        super().__init__(name=f"service {service.name}", daemon=True)
        self.backend = backend
        self.service = service
        self.tasks = []
        self.stopping = False
        self.last_completed_task_definition = None
        self.relaunch_at = 0.0
        self.relaunch_delay = RELAUNCH_BACKOFF_START_SECONDS
        self.lock = threading.RLock()

    # Deployments -------------------------------------------------------

    def start_deployment(self, deployment, rollback_from=None):
        """A new PRIMARY deployment of the service's task definition (moto's
        own from CreateService, or a new one)."""
        with self.lock:
            service = self.service
            now = utcnow()
            deployment_id = deployment["id"] if deployment else f"ecs-svc/{mock_random.randint(0, 32**12)}"
            template = dict(deployment or (service.deployments[0] if service.deployments else {}))
            template.update(
                {
                    "id": deployment_id,
                    "status": "PRIMARY",
                    "taskDefinition": service.task_definition,
                    "desiredCount": service.desired_count,
                    "runningCount": 0,
                    "pendingCount": 0,
                    "failedTasks": 0,
                    "rolloutState": "IN_PROGRESS",
                    "rolloutStateReason": f"ECS deployment {deployment_id} in progress.",
                    "createdAt": now,
                    "updatedAt": now,
                }
            )
            older = [] if deployment else [dict(old, status="ACTIVE") for old in service.deployments]
            service.deployments = [template] + older
            self.relaunch_at = 0.0
            self.relaunch_delay = RELAUNCH_BACKOFF_START_SECONDS
            if rollback_from:
                self.event(f"(service {service.name}) rolling back to deployment {deployment_id}.")

    def desired_changed(self):
        with self.lock:
            primary = self.primary()
            if primary:
                primary["desiredCount"] = self.service.desired_count

    def primary(self):
        return next((d for d in self.service.deployments if d["status"] == "PRIMARY"), None)

    def event(self, message):
        self.service.events.insert(
            0, {"id": str(mock_random.uuid4()), "createdAt": utcnow(), "message": message}
        )
        del self.service.events[100:]

    # The loop ------------------------------------------------------------

    def run(self):
        while not self.stopping:
            try:
                with self.lock:
                    self.tick()
            except Exception as error:  # the service goes on; moto keeps serving
                print(f"sandbox_services: {self.service.name}: {error!r}", file=sys.stderr)
            time.sleep(TICK_SECONDS)

    def tick(self):
        primary = self.primary()
        if primary is None:
            return
        self.reap(primary)
        self.check_health()
        self.circuit_breaker(primary)
        primary = self.primary()
        self.launch(primary)
        self.count(primary)
        self.complete(primary)

    def tasks_of(self, deployment):
        return [task for task in self.tasks if task.deployment["id"] == deployment["id"]]

    def reap(self, primary):
        for task in self.tasks:
            if task.live() or task.counted:
                continue
            task.counted = True
            self.leave_service(task)
            if task.stopped_by_scheduler:
                continue
            self.event(f"(service {self.service.name}) has stopped 1 running tasks: (task {task.id}).")
            if task.deployment["id"] == primary["id"]:
                primary["failedTasks"] = primary.get("failedTasks", 0) + 1
        # Stopped tasks stay listed (DescribeTasks) through moto's records.
        self.tasks = [task for task in self.tasks if task.live()]

    def launch(self, primary):
        live = [task for task in self.tasks_of(primary) if task.live()]
        missing = primary["desiredCount"] - len(live)
        if missing <= 0 or time.monotonic() < self.relaunch_at:
            return
        if primary.get("failedTasks", 0) >= circuit_breaker_threshold(primary["desiredCount"]):
            self.relaunch_at = time.monotonic() + self.relaunch_delay
            self.relaunch_delay = min(self.relaunch_delay * 2, RELAUNCH_BACKOFF_MAX_SECONDS)
        started = [self.start_task(primary) for _ in range(missing)]
        self.event(
            f"(service {self.service.name}) has started {len(started)} tasks: "
            + " ".join(f"(task {task.id})." for task in started)
        )

    def start_task(self, deployment):
        service = self.service
        task_definition = self.backend.describe_task_definition(deployment["taskDefinition"])
        cluster = self.backend._get_cluster(service.cluster_name)
        task = ecs_models.Task(
            cluster=cluster,
            task_definition=task_definition,
            container_instance_arn=None,
            resource_requirements=None,
            backend=self.backend,
            group=f"service:{service.name}",
            launch_type=service.launch_type or "FARGATE",
            started_by=deployment["id"],
            networking_configuration=service.network_configuration or None,
            platform_version=service.platform_version,
        )
        self.backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
        run = sandbox_tasks.TaskRun(self.backend, task, task_definition, network="bridge")
        task._sandbox_run = run
        sandbox_tasks.track(run)
        threading.Thread(target=run.run, name=f"task {task.id}", daemon=True).start()
        service_task = ServiceTask(self, deployment, run)
        self.tasks.append(service_task)
        return service_task

    def count(self, primary):
        service = self.service
        running_total = pending_total = 0
        for deployment in service.deployments:
            tasks = [task for task in self.tasks_of(deployment) if task.live()]
            running = sum(1 for task in tasks if task.run.status == "RUNNING")
            pending = len(tasks) - running
            if deployment["runningCount"] != running or deployment["pendingCount"] != pending:
                deployment["runningCount"], deployment["pendingCount"] = running, pending
                deployment["updatedAt"] = utcnow()
            running_total += running
            pending_total += pending
        service.running_count, service.pending_count = running_total, pending_total

    def circuit_breaker(self, primary):
        breaker = (self.service.deployment_configuration or {}).get("deploymentCircuitBreaker") or {}
        if not breaker.get("enable") or primary["rolloutState"] != "IN_PROGRESS":
            return
        if primary.get("failedTasks", 0) < circuit_breaker_threshold(primary["desiredCount"]):
            return
        name = self.service.name
        primary["rolloutState"] = "FAILED"
        primary["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
        primary["updatedAt"] = utcnow()
        self.event(f"(service {name}) (deployment {primary['id']}) deployment failed: tasks failed to start.")
        target = self.last_completed_task_definition
        if breaker.get("rollback") and target and target != primary["taskDefinition"]:
            self.service.task_definition = target
            self.start_deployment(None, rollback_from=primary["id"])

    def complete(self, primary):
        tasks = [task for task in self.tasks_of(primary) if task.live()]
        behind_balancer = bool(self.target_groups())
        ready = [task for task in tasks if task.run.status == "RUNNING" and (task.healthy or not behind_balancer)]
        if len(ready) < primary["desiredCount"]:
            return
        # Scale in: extra tasks of the primary deployment.
        for task in tasks[primary["desiredCount"] :]:
            self.stop_task(task, "Scaling activity initiated by (deployment %s)" % primary["id"])
        # Drain and stop the older deployments' tasks.
        older = [d for d in self.service.deployments if d["id"] != primary["id"]]
        draining = False
        for deployment in older:
            for task in self.tasks_of(deployment):
                if task.live():
                    draining = True
                    self.drain(task, primary)
        if draining:
            return
        if older:
            self.service.deployments = [primary]
        if primary["rolloutState"] == "IN_PROGRESS":
            primary["rolloutState"] = "COMPLETED"
            primary["rolloutStateReason"] = f"ECS deployment {primary['id']} completed."
            primary["updatedAt"] = utcnow()
            self.last_completed_task_definition = primary["taskDefinition"]
            name = self.service.name
            self.event(f"(service {name}) (deployment {primary['id']}) deployment completed.")
            self.event(f"(service {name}) has reached a steady state.")

    # Tasks and the load balancer ----------------------------------------

    def target_groups(self):
        """(target group, container port) of the service's load balancers."""
        backend = elbv2_models.elbv2_backends[self.backend.account_id][self.backend.region_name]
        found = []
        for balancer in self.service.load_balancers or []:
            group = backend.target_groups.get(balancer.get("targetGroupArn"))
            if group is not None:
                found.append((group, int(balancer.get("containerPort") or group.port or 80)))
        return found

    def check_health(self):
        groups = self.target_groups()
        now = time.monotonic()
        for task in self.tasks:
            if not task.live() or task.run.status != "RUNNING" or task.run.stopping:
                continue
            if task.started_running is None:
                task.started_running = now
            if not task.address:
                task.address = task.run.address()
            if not groups or now < task.next_check or not task.address:
                continue
            group, port = groups[0]
            task.next_check = now + int(group.health_check_interval_seconds)
            if probe(group, task.address, port):
                task.passes, task.failures = task.passes + 1, 0
                if not task.healthy and task.passes >= int(group.healthy_threshold_count):
                    task.healthy = True
                    for every_group, every_port in groups:
                        self.enter_service(every_group.arn, (task.address, every_port))
            else:
                task.passes, task.failures = 0, task.failures + 1
                if task.failures >= int(group.unhealthy_threshold_count):
                    if task.healthy:
                        task.healthy = False
                        self.leave_service(task)
                    grace = int(self.service.health_check_grace_period_seconds or 0)
                    if now - task.started_running >= grace:
                        reason = f"Task failed ELB health checks in (target-group {group.arn})"
                        self.event(f"(service {self.service.name}) (task {task.id}) failed ELB health checks in (target-group {group.arn})")
                        task.run.stop(reason, stop_code="ServiceSchedulerInitiated")

    def enter_service(self, group_arn, target):
        with _in_service_lock:
            _in_service.setdefault(group_arn, []).append(target)

    def leave_service(self, task):
        if not task.address:
            return
        with _in_service_lock:
            for group_arn, targets in _in_service.items():
                _in_service[group_arn] = [target for target in targets if target[0] != task.address]

    def drain(self, task, primary):
        """Out of the load balancer at once; stopped after the target
        group's deregistration delay."""
        if task.stopped_by_scheduler:
            return
        task.stopped_by_scheduler = True
        self.leave_service(task)
        delay = 0
        for group, _ in self.target_groups():
            delay = max(delay, int(group.attributes.get("deregistration_delay.timeout_seconds", 300)))
        reason = f"Scaling activity initiated by (deployment {primary['id']})"
        timer = threading.Timer(delay, task.run.stop, args=(reason,), kwargs={"stop_code": "ServiceSchedulerInitiated"})
        timer.daemon = True
        timer.start()

    def stop_task(self, task, reason):
        task.stopped_by_scheduler = True
        self.leave_service(task)
        task.run.stop(reason, stop_code="ServiceSchedulerInitiated")

    def stop_all(self, reason):
        self.stopping = True
        with self.lock:
            for task in self.tasks:
                if task.live():
                    self.stop_task(task, reason)


def probe(group, address, port):
    """One health check as the target group defines it."""
    path = group.health_check_path or "/"
    codes = str((getattr(group, "matcher", None) or {}).get("HttpCode", "200"))
    timeout = int(group.health_check_timeout_seconds or 5)
    try:
        connection = http.client.HTTPConnection(address, port, timeout=timeout)
        connection.request("GET", path, headers={"User-Agent": "ELB-HealthChecker/2.0"})
        status = connection.getresponse().status
        connection.close()
    except (OSError, http.client.HTTPException):
        return False
    return matches(codes, status)


def matches(codes, status):
    """A matcher: "200", "200,202" or "200-299"."""
    for part in codes.split(","):
        low, _, high = part.strip().partition("-")
        if low and int(low) <= status <= int(high or low):
            return True
    return False


class LoadBalancerProxy:
    """An application load balancer on a free loopback port.

    A real load balancer has one port per listener (80 and 443); its DNS
    name here is one loopback port, so that port stands for every listener:
    a connection that opens with a TLS handshake (first byte 0x16) is the
    HTTPS listener's, any other is the HTTP listener's. A listener that
    does not exist refuses the connection (it is closed unanswered). The
    listeners are read on every request, so Terraform turning port 80 from
    forward into redirect takes effect at once, as on AWS."""

    def __init__(self, backend, balancer_arn):
        self.backend = backend
        self.balancer_arn = balancer_arn
        self.turn = itertools.count()
        self.tls_contexts = {}
        self.tls_lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                proxy.serve(self, isinstance(self.connection, ssl.SSLSocket))

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one

            def log_message(self, format, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                connection = proxy.accept(request)
                if connection is None:
                    return
                try:
                    self.RequestHandlerClass(connection, client_address, self)
                finally:
                    if connection is not request:
                        connection.close()

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = "127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, name=f"alb {self.address}", daemon=True).start()

    def listener(self, protocol):
        """The balancer's listener of this protocol (the lowest port)."""
        balancer = self.backend.load_balancers.get(self.balancer_arn)
        listeners = [
            listener for listener in (balancer.listeners.values() if balancer else []) if listener.protocol == protocol
        ]
        return min(listeners, key=lambda listener: int(listener.port), default=None)

    def accept(self, connection):
        """The connection as its listener serves it: TLS terminated with the
        HTTPS listener's certificate, or as it is; None when no listener of
        its protocol exists or the handshake fails."""
        try:
            first = connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return None
        if not first:
            return None
        if first != b"\x16":
            return connection if self.listener("HTTP") else None
        listener = self.listener("HTTPS")
        if listener is None:
            return None
        try:
            return self.tls_context(listener).wrap_socket(connection, server_side=True)
        except (OSError, ValueError, KeyError):
            return None

    def tls_context(self, listener):
        """The listener's certificate from ACM (imported or issued) and its
        security policy: ELBSecurityPolicy-TLS13-1-3-* accepts TLS 1.3 only,
        the other TLS13 and TLS-1-2 policies TLS 1.2 and 1.3
        (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/describe-ssl-policies.html).
        Older policies also accept TLS 1.0 and 1.1; the sandbox offers 1.2 at
        least, as this machine's OpenSSL does."""
        arn = listener.certificate
        policy = listener.ssl_policy or ""
        with self.tls_lock:
            if (arn, policy) in self.tls_contexts:
                return self.tls_contexts[(arn, policy)]
            bundle = acm_models.acm_backends[self.backend.account_id][self.backend.region_name]._certificates[arn]
            directory = os.path.join(SANDBOX_DIR, "alb-certificates")
            os.makedirs(directory, mode=0o700, exist_ok=True)
            path = os.path.join(directory, arn.rsplit("/", 1)[-1] + ".pem")
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as pem:
                pem.write(bundle.cert.strip() + b"\n")
                if bundle.chain:
                    pem.write(bundle.chain.strip() + b"\n")
                pem.write(bundle.key.strip() + b"\n")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_3 if "TLS13-1-3" in policy else ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(path)
            self.tls_contexts[(arn, policy)] = context
            return context

    def serve(self, request, tls):
        """What the listener's default action does: forward, redirect or a
        fixed response
        (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-listeners.html#rule-action-types)."""
        listener = self.listener("HTTPS" if tls else "HTTP")
        action = next(iter(listener.default_actions), None) if listener else None
        if action is None:
            return answer(request, 503, b"503 Service Temporarily Unavailable\n")
        if action.type == "redirect":
            return self.redirect(request, tls, listener, action.data.get("RedirectConfig") or {})
        if action.type == "fixed-response":
            config = action.data.get("FixedResponseConfig") or {}
            return answer(
                request,
                int(config.get("StatusCode", 200)),
                (config.get("MessageBody") or "").encode(),
                config.get("ContentType", "text/plain"),
            )
        if action.type == "forward":
            groups = [action.data.get("TargetGroupArn")] + [
                group.get("TargetGroupArn") for group in (action.data.get("ForwardConfig") or {}).get("TargetGroups", [])
            ]
            return self.forward(request, tls, listener, [group for group in groups if group])
        return answer(request, 503, b"503 Service Temporarily Unavailable\n")

    def redirect(self, request, tls, listener, config):
        """The redirect action: #{protocol}, #{host}, #{port}, #{path} and
        #{query} are the request's; a port of one of this balancer's
        listeners is this loopback port, which stands for them all."""
        authority = request.headers.get("Host") or "127.0.0.1"
        host = authority if authority.endswith("]") else authority.rsplit(":", 1)[0]
        path, _, query = request.path.partition("?")
        keys = {
            "#{protocol}": "HTTPS" if tls else "HTTP",
            "#{host}": host,
            "#{port}": str(listener.port),
            "#{path}": path.lstrip("/"),
            "#{query}": query,
        }

        def part(name, default):
            value = str(config.get(name) or default)
            for key, replacement in keys.items():
                value = value.replace(key, replacement)
            return value

        protocol = part("Protocol", "#{protocol}").lower()
        port = part("Port", "#{port}")
        balancer = self.backend.load_balancers.get(self.balancer_arn)
        if balancer and port in {str(other.port) for other in balancer.listeners.values()}:
            port = str(self.port)
        query = part("Query", "#{query}")
        location = f"{protocol}://{part('Host', '#{host}')}:{port}{part('Path', '/#{path}')}" + (
            f"?{query}" if query else ""
        )
        status = int(str(config.get("StatusCode", "HTTP_301")).removeprefix("HTTP_"))
        answer(request, status, b"", "text/html", [("Location", location)])

    def targets(self, groups):
        with _in_service_lock:
            return [target for arn in groups for target in _in_service.get(arn, [])]

    def forward(self, request, tls, listener, groups):
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else None
        targets = self.targets(groups)
        if not targets:
            return answer(request, 503, b"503 Service Temporarily Unavailable\n")
        address, port = targets[next(self.turn) % len(targets)]
        headers = {key: value for key, value in request.headers.items() if key.lower() not in HOP_BY_HOP}
        client = request.client_address[0]
        forwarded_for = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
        headers["X-Forwarded-Proto"] = "https" if tls else "http"
        headers["X-Forwarded-Port"] = str(listener.port)
        try:
            connection = http.client.HTTPConnection(address, port, timeout=60)
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            request.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    request.send_header(key, value)
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(payload)
            connection.close()
        except (OSError, http.client.HTTPException):
            answer(request, 502, b"502 Bad Gateway\n")


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


def answer(request, status, body, content_type="text/plain", headers=()):
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    for key, value in headers:
        request.send_header(key, value)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)
