# Drives OpenStack cinder's Dell EMC PowerFlex (ScaleIO) volume driver, unchanged, against
# a meshblock MDM's REST API, step by step (harness.py prints one JSON line per step).
#
# Input (stdin, JSON): host, port, certPath, user, password, protectionDomain,
# storagePool, workDir, sdcId (an SDC to map a volume to: mapping is os-brick's part in
# OpenStack, so this script maps through the REST API itself), manageVolumeId (an unmapped
# volume to manage), mappedVolumeId (a mapped volume whose manage must be refused).
#
# Left out: nothing of the driver needs the scini kernel driver for these steps (attach,
# copy image to/from volume and migration do, through os-brick: os_brick_connector.py covers the
# connector's REST calls). No database: volumes carry no volume type, so the provisioning
# comes from the backend's san_thin_provision, as for a volume of a type without extra specs.

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from oslo_config import cfg  # noqa: E402

from cinder import context as cinder_context  # noqa: E402
from cinder import exception  # noqa: E402
from cinder import objects  # noqa: E402

objects.register_all()

from cinder.volume import configuration  # noqa: E402
from cinder.volume.drivers.dell_emc.powerflex import driver as flex  # noqa: E402
from cinder.volume.drivers.dell_emc.powerflex import utils as flex_utils  # noqa: E402

BACKEND = "powerflex"
GiB_IN_KB = 1024 * 1024


def write_config(target):
    """A minimal cinder.conf: one PowerFlex backend, the MDM's certificate verified."""
    path = os.path.join(target["workDir"], "cinder.conf")
    lines = [
        "[DEFAULT]",
        "enabled_backends = %s" % BACKEND,
        "lock_path = %s" % target["workDir"],
        "state_path = %s" % target["workDir"],
        "",
        "[%s]" % BACKEND,
        "volume_driver = cinder.volume.drivers.dell_emc.powerflex.driver"
        ".PowerFlexDriver",
        "volume_backend_name = %s" % BACKEND,
        "san_ip = %s" % target["host"],
        "powerflex_rest_server_port = %d" % target["port"],
        "san_login = %s" % target["user"],
        "san_password = %s" % target["password"],
        "powerflex_storage_pools = %s:%s" % (target["protectionDomain"],
                                             target["storagePool"]),
        "san_thin_provision = true",
        "driver_ssl_cert_verify = true",
        "driver_ssl_cert_path = %s" % target["certPath"],
        "",
    ]
    with open(path, "w") as file:
        file.write("\n".join(lines))
    return path


def main():
    harness.setup_logging()
    target = harness.read_target()
    cfg.CONF(["--config-file", write_config(target)], project="cinder",
             default_config_files=[])
    conf = configuration.Configuration(flex.powerflex_opts,
                                       config_group=BACKEND)
    driver = flex.PowerFlexDriver(configuration=conf, host="cinder@" + BACKEND)
    ctx = cinder_context.get_admin_context()
    pool_host = "cinder@%s#%s:%s" % (BACKEND, target["protectionDomain"],
                                     target["storagePool"])
    steps = harness.Steps()
    volumes = {}
    snapshots = {}

    def new_volume(key, size_gb):
        volume = objects.Volume(context=ctx, id=str(uuid.uuid4()),
                                size=size_gb, host=pool_host,
                                volume_type_id=None, volume_type=None,
                                provider_id=None, snapshots=objects.SnapshotList())
        volumes[key] = volume
        return volume

    def query(provider_id):
        return driver._get_client().query_volume(provider_id)

    def describe(volume):
        found = query(volume.provider_id)
        return {"providerId": volume.provider_id,
                "name": found.get("name"),
                "expectedName": flex_utils.id_to_base64(volume.id),
                "volumeType": found.get("volumeType"),
                "sizeInKb": found.get("sizeInKb"),
                "mappedSdcInfo": found.get("mappedSdcInfo")}

    def create(key, size_gb, provisioning):
        def step():
            volume = new_volume(key, size_gb)
            driver.provisioning_type = provisioning
            try:
                updates = driver.create_volume(volume)
            finally:
                driver.provisioning_type = "thin"
            volume.update(updates)
            return {"updates": updates, "volume": describe(volume)}
        return step

    def snapshot_of(key, volume_key):
        def step():
            volume = volumes[volume_key]
            snapshot = objects.Snapshot(context=ctx, id=str(uuid.uuid4()),
                                        volume_id=volume.id, volume=volume,
                                        volume_size=volume.size,
                                        provider_id=None)
            updates = driver.create_snapshot(snapshot)
            snapshot.update(updates)
            snapshots[key] = snapshot
            return {"updates": updates, "snapshot": describe(snapshot)}
        return step

    def from_source(key, source, size_gb, clone):
        def step():
            volume = new_volume(key, size_gb)
            if clone:
                updates = driver.create_cloned_volume(volume, source())
            else:
                updates = driver.create_volume_from_snapshot(volume, source())
            volume.update(updates)
            return {"updates": updates, "volume": describe(volume)}
        return step

    def extend(key, size_gb):
        def step():
            volume = volumes[key]
            driver.extend_volume(volume, size_gb)
            volume.size = size_gb
            return describe(volume)
        return step

    def revert(key, snapshot_key):
        def step():
            driver.revert_to_snapshot(ctx, volumes[key], snapshots[snapshot_key])
            return describe(volumes[key])
        return step

    def delete(key):
        def step():
            volume = volumes[key]
            driver.delete_volume(volume)
            return {"providerId": volume.provider_id}
        return step

    def map_to_sdc(key):
        # What os-brick does on attach (addMappedSdc), here by sdcId through the REST API.
        def step():
            client = driver._get_client()
            r, reply = client.execute_powerflex_post_request(
                "/instances/Volume::%(vol_id)s/action/addMappedSdc",
                {"sdcId": target["sdcId"], "allowMultipleMappings": "TRUE"},
                vol_id=volumes[key].provider_id)
            if r.status_code != 200:
                raise RuntimeError("addMappedSdc: %s %s" % (r.status_code, reply))
            return describe(volumes[key])
        return step

    def manage(volume_id, mapped):
        def step():
            volume = new_volume("managed" if not mapped else "refused", 8)
            # The driver refuses a volume without a type; any type id does (no extra specs read).
            volume.volume_type_id = str(uuid.uuid4())
            ref = {"source-id": volume_id}
            driver._is_managed = lambda provider_id: False  # no database here
            if mapped:
                try:
                    driver.manage_existing_get_size(volume, ref)
                except exception.ManageExistingInvalidReference as err:
                    return {"refused": str(err)}
                raise RuntimeError("a mapped volume was accepted for management")
            size = driver.manage_existing_get_size(volume, ref)
            updates = driver.manage_existing(volume, ref)
            return {"sizeGb": size, "updates": updates}
        return step

    steps.run("do_setup", lambda: driver.do_setup(ctx))
    steps.run("check_for_setup_error", driver.check_for_setup_error,
              needs=["do_setup"])
    ready = ["check_for_setup_error"]
    steps.run("get_volume_stats", lambda: driver.get_volume_stats(refresh=True),
              needs=ready)
    steps.run("create thin volume", create("thin", 8, "thin"), needs=ready)
    steps.run("create thick volume", create("thick", 8, "thick"), needs=ready)
    steps.run("extend thin volume to 16 GB", extend("thin", 16),
              needs=["create thin volume"])
    steps.run("create snapshot", snapshot_of("snap", "thin"),
              needs=["create thin volume"])
    steps.run("create volume from snapshot (24 GB: extended)",
              from_source("fromSnap", lambda: snapshots["snap"], 24, False),
              needs=["create snapshot"])
    steps.run("clone volume", from_source("clone", lambda: volumes["thin"],
                                          volumes["thin"].size
                                          if "thin" in volumes else 8, True),
              needs=["create thin volume"])
    steps.run("revert volume to snapshot", revert("thin", "snap"),
              needs=["create snapshot"])
    steps.run("manage existing volume (get size, manage)",
              manage(target["manageVolumeId"], False), needs=["do_setup"])
    steps.run("manage existing mapped volume: refused",
              manage(target["mappedVolumeId"], True), needs=["do_setup"])
    steps.run("delete snapshot",
              lambda: driver.delete_snapshot(snapshots["snap"]) or
              {"providerId": snapshots["snap"].provider_id},
              needs=["create snapshot"])
    steps.run("delete unmapped volume (clone)", delete("clone"),
              needs=["clone volume"])
    steps.run("delete volume already gone (clone again)", delete("clone"),
              needs=["delete unmapped volume (clone)"])
    steps.run("map thick volume to the SDC", map_to_sdc("thick"),
              needs=["create thick volume"])
    steps.run("delete mapped volume (thick)", delete("thick"),
              needs=["map thick volume to the SDC"])
    steps.run("delete volume from snapshot", delete("fromSnap"),
              needs=["create volume from snapshot (24 GB: extended)"])
    steps.run("delete thin volume", delete("thin"),
              needs=["create thin volume"])
    steps.run("get_volume_stats after deletes",
              lambda: driver.get_volume_stats(refresh=True), needs=ready)
    sys.stdout.write(json.dumps({"done": True}) + "\n")


if __name__ == "__main__":
    main()
