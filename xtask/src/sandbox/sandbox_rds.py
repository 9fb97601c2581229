"""RDS instances backed by real PostgreSQL servers, for the sandbox's moto.

moto's RDS keeps a record of an instance and nothing answers at its
endpoint, so a migration "succeeds" against no database at all. Here every
CreateDBInstance of a postgres engine starts a real server from the host's
PostgreSQL binaries, under the sandbox's directory
(`<sandbox dir>/rds/<identifier>/`), and the instance's endpoint names it:

- The master user and password and the initial database are the request's
  (MasterUsername, MasterUserPassword, DBName), as RDS creates them
  (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_CreateDBInstance.html).
  Like RDS's master user, it is not a superuser: it may create roles and
  databases and owns the initial database; the cluster's superuser
  (`rdsadmin`, as on RDS) has a password nobody keeps.
- Only TLS connections are accepted, as RDS for PostgreSQL 15 and later
  does by default (rds.force_ssl = 1,
  https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/PostgreSQL.Concepts.General.SSL.html),
  with a certificate for the endpoint's address signed by the sandbox's
  RDS CA (XTASK_SANDBOX_RDS_CA), as RDS's is signed by the RDS CA that
  clients verify it with.
- The endpoint is an address of the instance's own on the instance's port:
  on AWS, Endpoint.Port is the port asked for, and the Terraform provider
  reads `port` back from it, so a different port would be drift. The
  address is the gateway of a Docker network made for the instance (an
  address of this host that the service's containers, each on Docker's
  bridge network with an address of its own, reach as tasks reach RDS
  inside a VPC); without Docker, a loopback address of its own
  (127.a.b.c). Should the port be taken there, the server runs on a free
  port instead (and Terraform will see drift). `sandbox down` removes the
  networks.
- ModifyDBInstance with a new master password changes it; StopDBInstance and
  StartDBInstance stop and start the server (the endpoint then refuses
  connections, as a stopped instance's does); DeleteDBInstance stops it and
  deletes its data.

Settings come from the environment `sandbox up` starts moto with:
XTASK_SANDBOX_DIR (without it moto's RDS is left as it is) and
XTASK_SANDBOX_RDS_CA.
"""

import glob
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from moto.rds import models as rds_models

SANDBOX_DIR = os.environ.get("XTASK_SANDBOX_DIR")
SANDBOX_NAME = os.environ.get("XTASK_SANDBOX_NAME", "sandbox")
# The sandbox's RDS CA (ca.pem, ca.key), which signs the servers' certificates.
RDS_CA_DIR = os.environ.get("XTASK_SANDBOX_RDS_CA")
# The label `sandbox down` removes containers and networks by (as sandbox_tasks).
LABEL = "xtask-sandbox"
# The cluster's superuser, named as on RDS.
SUPERUSER = "rdsadmin"
START_TIMEOUT_SECONDS = 30

_servers = {}
_lock = threading.Lock()


def install():
    if not SANDBOX_DIR:
        return
    backend = rds_models.RDSBackend
    original_create = backend.create_db_instance
    original_modify = backend.modify_db_instance
    original_stop = backend.stop_db_instance
    original_start = backend.start_db_instance
    original_delete = backend.delete_db_instance
    original_endpoint = rds_models.DBInstance.endpoint
    original_address = rds_models.DBInstance.address

    def create_db_instance(self, db_kwargs):
        database = original_create(self, db_kwargs)
        if (database.engine or "").lower() == "postgres":
            try:
                server = Server(database.db_instance_identifier)
                # moto's instance will not hand its password out again.
                password = request_password(db_kwargs) or ""
                server.create(database.master_username, password, database.db_name)
                server.start(preferred_port=int(database.port or 5432))
            except Exception:
                # RDS reports a failed creation through the instance's
                # status; moto has no such state, so the request fails.
                del self.databases[database.db_instance_identifier]
                raise
            with _lock:
                _servers[database.db_instance_identifier] = server
        return database

    def modify_db_instance(self, db_instance_identifier, db_kwargs):
        database = original_modify(self, db_instance_identifier, db_kwargs)
        password = request_password(db_kwargs)
        server = _servers.get(database.db_instance_identifier)
        if server and password:
            server.set_password(database.master_username, password)
        return database

    def stop_db_instance(self, db_instance_identifier, db_snapshot_identifier=None):
        database = original_stop(self, db_instance_identifier, db_snapshot_identifier)
        server = _servers.get(db_instance_identifier)
        if server:
            server.stop()
        return database

    def start_db_instance(self, db_instance_identifier):
        database = original_start(self, db_instance_identifier)
        server = _servers.get(db_instance_identifier)
        if server:
            server.start(preferred_port=server.port)
        return database

    def delete_db_instance(self, db_instance_identifier, *args, **kwargs):
        database = original_delete(self, db_instance_identifier, *args, **kwargs)
        with _lock:
            server = _servers.pop(db_instance_identifier, None)
        if server:
            server.stop()
            server.delete()
        return database

    def address(self):
        server = _servers.get(self.db_instance_identifier)
        return server.address if server else original_address.fget(self)

    def endpoint(self):
        server = _servers.get(self.db_instance_identifier)
        if not server:
            return original_endpoint.fget(self)
        return {"Address": server.address, "Port": server.port}

    backend.create_db_instance = create_db_instance
    backend.modify_db_instance = modify_db_instance
    backend.stop_db_instance = stop_db_instance
    backend.start_db_instance = start_db_instance
    backend.delete_db_instance = delete_db_instance
    rds_models.DBInstance.address = property(address)
    rds_models.DBInstance.endpoint = property(endpoint)


def shutdown():
    """Stops every server (`sandbox down`); their data stays for a look."""
    with _lock:
        servers = list(_servers.values())
    for server in servers:
        server.stop()


class Server:
    """One instance's PostgreSQL server."""

    def __init__(self, identifier):
        self.identifier = identifier
        self.base = os.path.join(SANDBOX_DIR, "rds", identifier)
        self.data = os.path.join(self.base, "data")
        self.socket_dir = os.path.join(self.base, "socket")
        self.log_path = os.path.join(self.base, "postgres.log")
        self.address = "127.0.0.1"
        self.certified_address = None
        self.port = None
        self.process = None
        # initdb and postgres refuse to run as root.
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def create(self, master_username, master_password, db_name):
        # A new instance has a new, empty database, whatever an earlier
        # sandbox left under the same name.
        shutil.rmtree(self.base, ignore_errors=True)
        os.makedirs(self.socket_dir)
        superuser_password = os.path.join(self.base, "superuser-password")
        with open(os.open(superuser_password, os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
        self._hand_over(self.base, self.socket_dir, superuser_password)
        try:
            self._run(
                [
                    binary("initdb"),
                    "--pgdata",
                    self.data,
                    f"--username={SUPERUSER}",
                    f"--pwfile={superuser_password}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            )
        finally:
            os.remove(superuser_password)
        # TLS only; the socket is for nobody but rdsadmin's setup.
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:
            hba.write(
                "local all all scram-sha-256\n"
                # From any source address: the server listens only on its
                # Docker network's gateway (or a loopback address), which
                # only this host and its containers reach, and a host's own
                # connections to it come from the host's primary address.
                "hostssl all all 0.0.0.0/0 scram-sha-256\n"
                "hostssl all all ::1/128 scram-sha-256\n"
            )
        # The master user, as RDS makes it: it logs in, creates roles and
        # databases, owns the initial database, and is no superuser. The
        # password goes on stdin, never on a command line.
        statements = [
            f"CREATE ROLE {identifier(master_username)} LOGIN CREATEDB CREATEROLE PASSWORD {literal(master_password)};"
        ]
        if db_name:
            statements.append(f"CREATE DATABASE {identifier(db_name)} OWNER {identifier(master_username)};")
        self._single_user(statements)

    def set_password(self, username, password):
        self._single_user_online(f"ALTER ROLE {identifier(username)} PASSWORD {literal(password)};")

    def start(self, preferred_port):
        if self.process and self.process.poll() is None:
            return
        if self.address == "127.0.0.1":
            self.address = bridge_gateway(self.identifier) or self.address
        self.address, self.port = choose_endpoint(preferred_port, self.address, self.port)
        self._certificate()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                binary("postgres"),
                "-D",
                self.data,
                "-p",
                str(self.port),
                "-k",
                self.socket_dir,
                "-c",
                f"listen_addresses={self.address}",
                "-c",
                "ssl=on",
                "-c",
                f"ssl_cert_file={os.path.join(self.base, 'server.crt')}",
                "-c",
                f"ssl_key_file={os.path.join(self.base, 'server.key')}",
                # Durability is worthless in a sandbox and costs seconds.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            **self._as_user(),
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres for {self.identifier} exited: {tail(self.log_path)}")
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
                print(
                    f"sandbox_rds: {self.identifier} serves PostgreSQL on {self.address}:{self.port} "
                    f"(pid {self.process.pid}, data {self.data})",
                    file=sys.stderr,
                )
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postgres for {self.identifier} did not start in {START_TIMEOUT_SECONDS}s")

    def stop(self):
        """Fast shutdown (SIGINT): clients are disconnected, as a stopping
        instance's are."""
        process, self.process = self.process, None
        if not process or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def delete(self):
        shutil.rmtree(self.base, ignore_errors=True)
        docker = shutil.which("docker")
        if docker:
            subprocess.run([docker, "network", "rm", network_name(self.identifier)], capture_output=True)

    def _certificate(self):
        """The server's certificate, for the endpoint's address. RDS signs
        it with the RDS CA of the instance's Region, which clients verify
        with the bundle AWS publishes; here the sandbox's RDS CA
        (XTASK_SANDBOX_RDS_CA, made by `sandbox up`, carried by offline
        images as their RDS bundle) signs it, so the app's verify-full meets
        what it meets on AWS: a name to match and a chain to check. Made
        again whenever the address changes."""
        if self.certified_address == self.address:
            return
        crt, key = os.path.join(self.base, "server.crt"), os.path.join(self.base, "server.key")
        csr, extensions = os.path.join(self.base, "server.csr"), os.path.join(self.base, "server.ext")
        subject = f"/CN={self.identifier}.sandbox.rds"
        # P-256: no time to make, where RSA 2048 takes up to a second.
        new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key]
        if not RDS_CA_DIR:
            raise RuntimeError("XTASK_SANDBOX_RDS_CA is not set: start the sandbox with `cargo xtask sandbox up`")
        with open(extensions, "w") as file:
            file.write(
                f"subjectAltName = IP:{self.address}\n"
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
            )
        self._run_checked(["openssl", "req", "-new", *new_key, "-subj", subject, "-out", csr], as_user=False)
        self._run_checked(
            [
                "openssl",
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                os.path.join(RDS_CA_DIR, "ca.pem"),
                "-CAkey",
                os.path.join(RDS_CA_DIR, "ca.key"),
                # Not -CAcreateserial: sandboxes share the CA's directory.
                "-set_serial",
                str(secrets.randbits(63)),
                "-days",
                "30",
                "-sha256",
                "-extfile",
                extensions,
                "-out",
                crt,
            ],
            as_user=False,
        )
        os.chmod(key, 0o600)
        self._hand_over(crt, key)
        self.certified_address = self.address

    def _single_user(self, statements):
        """Statements run by the postgres binary in single-user mode, before
        the server listens: no connection, no password needed."""
        self._run_checked(
            [binary("postgres"), "--single", "-D", self.data, "-c", "exit_on_error=true", "postgres"],
            stdin="\n".join(statements) + "\n",
        )

    def _single_user_online(self, statement):
        """A statement on a running server, as rdsadmin over the socket: its
        password is not kept, so the server is restarted in single-user
        mode instead. Rare (a password change) and quick."""
        was_running = self.process is not None and self.process.poll() is None
        self.stop()
        self._single_user([statement])
        if was_running:
            self.start(preferred_port=self.port)

    def _run(self, command, stdin=None):
        self._run_checked(command, stdin=stdin)

    def _run_checked(self, command, stdin=None, as_user=True):
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            **(self._as_user() if as_user else {}),
        )
        # An error may quote its statement, and a statement may hold a
        # password: those lines stay out of the message.
        output = "\n".join(
            line for line in (result.stdout + result.stderr).splitlines() if "PASSWORD" not in line.upper()
        )
        if result.returncode != 0 or "ERROR:" in output:
            raise RuntimeError(f"{os.path.basename(command[0])} for {self.identifier} failed: {output.strip()}")

    def _as_user(self):
        if not self.user:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": [], "cwd": self.base}

    def _hand_over(self, *paths):
        if self.user:
            for path in paths:
                os.chown(path, self.user.pw_uid, self.user.pw_gid)


def request_password(db_kwargs):
    """MasterUserPassword of a Create/ModifyDBInstance request, as moto
    hands the parameters over (the API's names, or snake_case)."""
    return db_kwargs.get("MasterUserPassword") or db_kwargs.get("master_user_password")


def network_name(identifier):
    return f"{LABEL}-{SANDBOX_NAME}-rds-{identifier}"


def bridge_gateway(identifier):
    """The gateway address of the instance's own Docker network, made if
    missing; None without Docker."""
    docker = shutil.which("docker")
    if not docker:
        return None
    name = network_name(identifier)
    inspect = [docker, "network", "inspect", name, "--format", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"]
    found = subprocess.run(inspect, capture_output=True, text=True)
    if found.returncode != 0:
        subprocess.run([docker, "network", "create", "--label", f"{LABEL}={SANDBOX_NAME}", name], capture_output=True)
        found = subprocess.run(inspect, capture_output=True, text=True)
    gateway = found.stdout.strip()
    if found.returncode != 0 or not gateway:
        print(f"sandbox_rds: no Docker network for {identifier}: {found.stderr.strip()}", file=sys.stderr)
        return None
    return gateway


def choose_endpoint(preferred_port, address=None, port=None):
    """The instance's address (its network's gateway, or none yet) on its
    port; the same one again when it restarts."""
    if address and address != "127.0.0.1":
        for candidate in (port, preferred_port):
            if candidate and bindable(address, candidate):
                return address, candidate
        return address, free_port(address)
    if address and port and bindable(address, port):
        return address, port
    for _ in range(50):
        candidate = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if bindable(candidate, preferred_port):
            return candidate, preferred_port
    print(
        f"sandbox_rds: port {preferred_port} is taken on every loopback address tried; "
        "using 127.0.0.1 and a free port (Terraform will see the port as drift)",
        file=sys.stderr,
    )
    return "127.0.0.1", free_port("127.0.0.1")


def free_port(address):
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def bindable(address, port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
            return True
        except OSError:
            return False


def binary(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} is not on PATH nor under /usr/lib/postgresql/*/bin: install PostgreSQL's server")
    return candidates[-1]


def identifier(name):
    return '"' + name.replace('"', '""') + '"'


def literal(value):
    return "'" + value.replace("'", "''") + "'"


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as file:
            return "".join(file.readlines()[-lines:])
    except OSError:
        return ""
