"""docker-py (the `docker` package on PyPI) driving Shoal through its Docker Engine API socket.

Run by `crates/shoal/tests/engine_docker_py.rs`, which starts an inactive `shoal daemon` and
passes its socket in DOCKER_HOST and its remote API address in SHOAL_ADDR. The tests run in
name order on one node: the swarm is created first (setUpClass) and left last.
"""

import base64
import os
import time
import unittest

import docker
from docker.errors import APIError, NotFound
from docker.types import (
    EndpointSpec,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
    ContainerSpec,
    UpdateConfig,
)

IMAGE = "busybox:latest"
LIMIT = 60.0


def eventually(what, check, limit=LIMIT):
    """Polls `check` until it returns a true value, for at most `limit` seconds."""
    start = time.monotonic()
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit}s waiting for {what}")
        time.sleep(0.2)


class Flows(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version="auto")
        cls.api = cls.client.api
        addr = os.environ["SHOAL_ADDR"]
        cls.node_id = cls.client.swarm.init(advertise_addr=addr, listen_addr=addr)

    def test_00_version_and_info(self):
        version = self.api.version()
        self.assertEqual(version["ApiVersion"], "1.50")
        self.assertEqual(version["MinAPIVersion"], "1.24")
        info = self.client.info()
        self.assertEqual(info["Swarm"]["LocalNodeState"], "active")
        self.assertTrue(info["Swarm"]["ControlAvailable"])
        self.assertEqual(info["Swarm"]["NodeID"], self.node_id)

    def test_01_swarm_inspect_update_and_token_rotation(self):
        swarm = self.client.swarm
        swarm.reload()
        before = swarm.attrs
        self.assertTrue(before["JoinTokens"]["Worker"].startswith("SWMTKN-1-"))
        swarm.update(rotate_worker_token=True)
        swarm.reload()
        after = swarm.attrs
        self.assertNotEqual(after["JoinTokens"]["Worker"], before["JoinTokens"]["Worker"])
        self.assertEqual(after["JoinTokens"]["Manager"], before["JoinTokens"]["Manager"])
        self.assertGreater(after["Version"]["Index"], before["Version"]["Index"])

    def test_01b_autolock_and_unlock_key_rotation(self):
        # docker-py's test_rotate_manager_unlock_key, with autolock turned on and off.
        self.assertEqual(self.api.get_unlock_key()["UnlockKey"], "")
        self.client.swarm.reload()
        spec = self.client.swarm.attrs["Spec"]
        spec["EncryptionConfig"]["AutoLockManagers"] = True
        version = self.client.swarm.attrs["Version"]["Index"]
        self.api.update_swarm(version=version, swarm_spec=spec)
        key = self.api.get_unlock_key()["UnlockKey"]
        self.assertTrue(key.startswith("SWMKEY-1-"), key)
        self.client.swarm.reload()
        version = self.client.swarm.attrs["Version"]["Index"]
        self.api.update_swarm(version=version, swarm_spec=self.client.swarm.attrs["Spec"],
                              rotate_manager_unlock_key=True)
        rotated = self.api.get_unlock_key()["UnlockKey"]
        self.assertTrue(rotated.startswith("SWMKEY-1-") and rotated != key, rotated)
        with self.assertRaises(APIError) as caught:
            self.api.unlock_swarm({"UnlockKey": rotated})
        self.assertEqual(caught.exception.status_code, 409)
        self.client.swarm.reload()
        spec = self.client.swarm.attrs["Spec"]
        spec["EncryptionConfig"]["AutoLockManagers"] = False
        self.api.update_swarm(version=self.client.swarm.attrs["Version"]["Index"],
                              swarm_spec=spec)
        self.assertEqual(self.api.get_unlock_key()["UnlockKey"], "")

    def test_02_init_twice_is_refused(self):
        with self.assertRaises(APIError) as caught:
            self.client.swarm.init(advertise_addr=os.environ["SHOAL_ADDR"],
                                   listen_addr=os.environ["SHOAL_ADDR"])
        self.assertEqual(caught.exception.status_code, 503)
        self.assertIn("This node is already part of a swarm.", caught.exception.explanation)

    def test_03_nodes(self):
        # The node's own session writes it READY once: read it after that, so the update
        # below names the version it read.
        eventually("the node to be ready", lambda: self.client.nodes.get(self.node_id)
                   .attrs["Status"]["State"] == "ready")
        nodes = self.client.nodes.list()
        self.assertEqual(len(nodes), 1)
        self.assertEqual(len(self.client.nodes.list(filters={"role": "worker"})), 0)
        self.assertEqual(len(self.api.nodes(filters={"id": self.node_id})), 1)
        node = self.client.nodes.get(self.node_id)
        self.assertEqual(node.attrs["Spec"]["Labels"], {})
        spec = {"Availability": "active", "Name": "renamed", "Role": "manager",
                "Labels": {"tier": "front"}}
        node.update(spec)
        node.reload()
        self.assertEqual(node.attrs["Spec"], spec)
        with self.assertRaises(NotFound):
            self.client.nodes.get("foobar01")

    def test_04_services(self):
        spec = ContainerSpec(image=IMAGE, command=["sleep", "1d"])
        restart = RestartPolicy(condition="any", delay=5, max_attempts=5)
        template = TaskTemplate(container_spec=spec, restart_policy=restart)
        service_id = self.api.create_service(
            template, name="pyweb", mode=ServiceMode("replicated", replicas=2),
            labels={"team": "py"},
            update_config=UpdateConfig(parallelism=1, order="start-first"),
            endpoint_spec=EndpointSpec(ports={8080: 80}),
        )["ID"]
        service = self.client.services.get(service_id)
        self.assertEqual(service.name, "pyweb")
        inspected = self.api.inspect_service(service_id)
        self.assertEqual(inspected["Spec"]["Mode"], {"Replicated": {"Replicas": 2}})
        self.assertEqual(inspected["Spec"]["TaskTemplate"]["RestartPolicy"],
                         {"Condition": "any", "Delay": 5, "MaxAttempts": 5, "Window": 0})
        self.assertEqual(inspected["Spec"]["Labels"], {"team": "py"})
        self.assertNotIn("RollbackConfig", inspected["Spec"])
        with_defaults = self.api.inspect_service(service_id, insert_defaults=True)
        self.assertIn("RollbackConfig", with_defaults["Spec"])

        eventually("2 running tasks", lambda: len(
            [t for t in service.tasks() if t["Status"]["State"] == "running"]) == 2)

        listed = self.api.services(filters={"name": "pyw"}, status=True)
        self.assertEqual([s["ID"] for s in listed], [service_id])
        self.assertEqual(listed[0]["ServiceStatus"]["DesiredTasks"], 2)
        self.assertNotIn("ServiceStatus", self.api.services(filters={"name": "pyweb"})[0])
        self.assertEqual(self.api.services(filters={"label": "team=nobody"}), [])

        # Scale, then a stale version is refused the way docker-py expects.
        old_index = inspected["Version"]["Index"]
        self.assertTrue(service.scale(3))
        service.reload()
        self.assertGreater(service.version, old_index)
        self.assertEqual(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"], 3)
        eventually("3 running tasks", lambda: len(
            [t for t in service.tasks() if t["Status"]["State"] == "running"]) == 3)
        with self.assertRaises(APIError) as caught:
            self.api.update_service(service_id, old_index, template, name="pyweb")
        self.assertTrue(caught.exception.explanation.endswith("update out of sequence"),
                        caught.exception.explanation)

        # Updates keep what they do not change; force_update redeploys.
        service.update(labels={"team": "py", "more": "yes"})
        service.reload()
        self.assertEqual(service.attrs["Spec"]["Labels"], {"team": "py", "more": "yes"})
        self.assertEqual(service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"], 3)
        self.assertTrue(service.force_update())
        service.reload()
        self.assertEqual(service.attrs["Spec"]["TaskTemplate"]["ForceUpdate"], 1)

        service.remove()
        with self.assertRaises(NotFound):
            self.client.services.get(service_id)

    def test_05_global_service_and_jobs(self):
        spec = ContainerSpec(image=IMAGE, command=["sleep", "1d"])
        svc = self.client.services.create(IMAGE, command=["sleep", "1d"], name="pyglobal",
                                          mode=ServiceMode("global"))
        eventually("a global task", lambda: len(svc.tasks()) == 1)
        self.assertEqual(svc.attrs["Spec"]["Mode"], {"Global": {}})
        svc.remove()
        job_id = self.api.create_service(
            TaskTemplate(container_spec=spec), name="pyjob",
            mode=ServiceMode("replicated-job", concurrency=2, replicas=4))["ID"]
        job = self.api.inspect_service(job_id)
        self.assertEqual(job["Spec"]["Mode"],
                         {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}})
        self.assertIn("JobStatus", job)
        self.api.remove_service(job_id)

    def test_06_secrets_and_configs(self):
        secret = self.client.secrets.create(name="pysecret", data=b"hunter2",
                                            labels={"a": "b"})
        got = self.client.secrets.get(secret.id)
        self.assertEqual(got.name, "pysecret")
        self.assertNotIn("Data", got.attrs["Spec"])
        self.assertEqual([s.id for s in self.client.secrets.list(filters={"name": "pysec"})],
                         [secret.id])
        got.remove()
        with self.assertRaises(NotFound):
            self.client.secrets.get(secret.id)

        config = self.client.configs.create(name="pyconfig", data=b"listen 80")
        got = self.client.configs.get(config.id)
        self.assertEqual(base64.b64decode(got.attrs["Spec"]["Data"]), b"listen 80")
        got.remove()
        with self.assertRaises(NotFound):
            self.client.configs.get(config.id)

    def test_07_networks(self):
        network = self.client.networks.create("pynet", driver="overlay",
                                              labels={"x": "y"})
        self.assertEqual(self.client.networks.get("pynet").id, network.id)
        self.assertIn(network.id, [n.id for n in self.client.networks.list()])
        spec = ContainerSpec(image=IMAGE, command=["sleep", "1d"])
        service_id = self.api.create_service(
            TaskTemplate(container_spec=spec, networks=["pynet"]), name="pynetted")["ID"]
        targets = self.api.inspect_service(service_id)["Spec"]["TaskTemplate"]["Networks"]
        self.assertEqual(targets, [{"Target": network.id}])
        self.api.remove_service(service_id)
        eventually("the network to be free", lambda: self._removed(network))

    def _removed(self, network):
        try:
            network.remove()
            return True
        except APIError:
            return False

    def test_99_leave(self):
        self.client.swarm.leave(force=True)
        with self.assertRaises(APIError) as caught:
            self.client.swarm.reload()
        self.assertEqual(caught.exception.status_code, 503)


if __name__ == "__main__":
    unittest.main()
