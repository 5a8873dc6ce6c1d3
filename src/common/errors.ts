// Errors are classes with stable codes (after undici's lib/core/errors.js):
// tests and callers compare `code`, never message text.
//
// Every code is listed here, once, with what it means: a MeshblockError can only be made
// with a code of `errorCodes` (an MB_ERR_* code) or an errno name (`ErrnoCode`, carried by
// SystemCallError, BackendError and ShortReadError). A code that arrives from another
// process (a REST reply, an SDS's refusal) is a string until `isMeshblockCode` says it is
// one of ours: checked at the edge, never cast.

import { constants as osConstants } from 'node:os';

/**
 * Every MB_ERR_* code in use. Codes are stable: a new meaning gets a new code, and a code
 * is never reused for something else (REST clients also see them, see src/mdm/rest-errors.ts).
 */
export const errorCodes = {
  // --- input and invariants (anywhere) ---
  /** A user-supplied value (CLI flag, REST field, config key) is wrong; the message names it. */
  MB_ERR_INVALID_ARGUMENT: 'MB_ERR_INVALID_ARGUMENT',
  /** A value is outside its allowed range (Node's ERR_OUT_OF_RANGE shape). */
  MB_ERR_OUT_OF_RANGE: 'MB_ERR_OUT_OF_RANGE',
  /** One of our own invariants broke: a bug, never bad input. */
  MB_ERR_ASSERTION: 'MB_ERR_ASSERTION',
  /** A name matches more than one object: give an id (or the protection domain). */
  MB_ERR_AMBIGUOUS: 'MB_ERR_AMBIGUOUS',

  // --- MDM: refusals of the state machine, the controller and the REST commands ---
  /** The named or numbered object does not exist. */
  MB_ERR_NOT_FOUND: 'MB_ERR_NOT_FOUND',
  /** Another object of the same kind already has this name. */
  MB_ERR_NAME_TAKEN: 'MB_ERR_NAME_TAKEN',
  /** The object still holds others (pools, SDSs, devices, volumes) and cannot be removed. */
  MB_ERR_NOT_EMPTY: 'MB_ERR_NOT_EMPTY',
  /** The SDS already belongs to another protection domain. */
  MB_ERR_SDS_ASSIGNED: 'MB_ERR_SDS_ASSIGNED',
  /** The SDS has devices, so its fault set (or membership) cannot change. */
  MB_ERR_SDS_IN_USE: 'MB_ERR_SDS_IN_USE',
  /** The SDS is not down, so what is asked (e.g. removing it as failed) does not apply. */
  MB_ERR_SDS_UP: 'MB_ERR_SDS_UP',
  /** The device (its id, or its path on that SDS) is already in the system. */
  MB_ERR_DEVICE_EXISTS: 'MB_ERR_DEVICE_EXISTS',
  /** Reserved in the REST errorCode table (1008): a device still holds chunks. Not raised today. */
  MB_ERR_DEVICE_IN_USE: 'MB_ERR_DEVICE_IN_USE',
  /** Removing this would leave a pool that holds volumes on fewer than two failure domains (SDSs, hosts or fault sets). */
  MB_ERR_POOL_IN_USE: 'MB_ERR_POOL_IN_USE',
  /** Reserved in the REST errorCode table (1010): the pool has no devices. Not raised today. */
  MB_ERR_POOL_EMPTY: 'MB_ERR_POOL_EMPTY',
  /** The pool has no placement yet (devices on fewer than two SDSs): it cannot hold volumes. */
  MB_ERR_POOL_NOT_READY: 'MB_ERR_POOL_NOT_READY',
  /** An SDS would be in another fault set (or none) than an SDS of its host label in its protection domain; the message names both, the host and the sets. */
  MB_ERR_HOST_FAULT_SET: 'MB_ERR_HOST_FAULT_SET',
  /** An SDS of the pool is down: the change must wait until it returns or is rebuilt around. */
  MB_ERR_POOL_DEGRADED: 'MB_ERR_POOL_DEGRADED',
  /** The SDC still has volumes mapped and cannot be removed. */
  MB_ERR_SDC_MAPPED: 'MB_ERR_SDC_MAPPED',
  /** The volume is mapped to SDCs: unmap it first. */
  MB_ERR_VOLUME_MAPPED: 'MB_ERR_VOLUME_MAPPED',
  /** The volume is open on an SDC (NBD clients attached): detach them before unmapping or overwriting it. */
  MB_ERR_VOLUME_OPEN: 'MB_ERR_VOLUME_OPEN',
  /** The V-Tree already holds as many snapshots (or generations) as allowed: the message says which limit. */
  MB_ERR_SNAPSHOT_LIMIT: 'MB_ERR_SNAPSHOT_LIMIT',
  /** The two volumes are not of the same V-Tree (restore: a volume is overwritten only from its own tree). */
  MB_ERR_VTREE_MISMATCH: 'MB_ERR_VTREE_MISMATCH',
  /** A snapshot barrier (consistency group) is under way, or was not confirmed by every SDS in time. */
  MB_ERR_SNAPSHOT_BARRIER: 'MB_ERR_SNAPSHOT_BARRIER',
  /** The volume's accessModeLimit is ReadOnly: it cannot be mapped read-write nor overwritten. */
  MB_ERR_VOLUME_READ_ONLY: 'MB_ERR_VOLUME_READ_ONLY',
  /** The volume is already mapped to this SDC. */
  MB_ERR_ALREADY_MAPPED: 'MB_ERR_ALREADY_MAPPED',
  /** The volume is mapped to another SDC and sharing was not asked for (allowMultipleMappings). */
  MB_ERR_MULTIPLE_MAPPINGS: 'MB_ERR_MULTIPLE_MAPPINGS',
  /** The pool has too little free capacity (after spare) for the volume. */
  MB_ERR_INSUFFICIENT_CAPACITY: 'MB_ERR_INSUFFICIENT_CAPACITY',
  /** The pool's placement groups cannot be placed on its devices; the message says why. */
  MB_ERR_PLACEMENT: 'MB_ERR_PLACEMENT',
  /** Placement planner: the pool has no devices to place on. */
  MB_ERR_PLACEMENT_NO_DEVICES: 'MB_ERR_PLACEMENT_NO_DEVICES',
  /** Placement planner: every device is in one failure domain (SDS, host or fault set), so two copies cannot be apart. */
  MB_ERR_PLACEMENT_ONE_DOMAIN: 'MB_ERR_PLACEMENT_ONE_DOMAIN',
  /** Placement planner: the fault sets cannot hold two copies apart. */
  MB_ERR_PLACEMENT_FAULT_SETS: 'MB_ERR_PLACEMENT_FAULT_SETS',
  /** The SDS to give a device to is not connected to the MDM. */
  MB_ERR_SDS_DISCONNECTED: 'MB_ERR_SDS_DISCONNECTED',
  /** The SDS did not answer the MDM's order in time. */
  MB_ERR_SDS_UNREACHABLE: 'MB_ERR_SDS_UNREACHABLE',
  /** The SDS failed the MDM's order, or refused it with a code this MDM does not know. */
  MB_ERR_SDS_FAILED: 'MB_ERR_SDS_FAILED',
  /** The MDM's data directory holds another cluster than the one it was started for. */
  MB_ERR_MDM_CLUSTER: 'MB_ERR_MDM_CLUSTER',
  /** The MDM's identity file or cluster secret is missing or damaged. */
  MB_ERR_MDM_IDENTITY: 'MB_ERR_MDM_IDENTITY',

  // --- MDM cluster (Master, Slaves, Tie-Breakers on etcd) ---
  /** This MDM is not (or no longer sure to be) the Master: ask the Master (clients move on by themselves). */
  MB_ERR_MDM_NOT_MASTER: 'MB_ERR_MDM_NOT_MASTER',
  /** The etcd cluster has no quorum (a majority of its members is unreachable): no Master, no changes; IO goes on. */
  MB_ERR_NO_QUORUM: 'MB_ERR_NO_QUORUM',
  /** An etcd call failed or held something this MDM cannot read (the message says which). */
  MB_ERR_ETCD: 'MB_ERR_ETCD',
  /** The MDM cluster refuses the membership or ownership change asked for (the message says why). */
  MB_ERR_MDM_CLUSTER_CHANGE: 'MB_ERR_MDM_CLUSTER_CHANGE',
  /** A journal record no longer applies to the state replayed before it. */
  MB_ERR_JOURNAL_REPLAY: 'MB_ERR_JOURNAL_REPLAY',
  /** The journal on disk is damaged; the MDM refuses to open it rather than lose changes. */
  MB_ERR_JOURNAL_CORRUPT: 'MB_ERR_JOURNAL_CORRUPT',
  /** A journal write or fdatasync failed; it refuses everything until reopened. */
  MB_ERR_JOURNAL_FAILED: 'MB_ERR_JOURNAL_FAILED',
  /** The journal is closed. */
  MB_ERR_JOURNAL_CLOSED: 'MB_ERR_JOURNAL_CLOSED',
  /** Too many journal bytes wait for the disk: the change is refused, not queued without bound. */
  MB_ERR_JOURNAL_BUSY: 'MB_ERR_JOURNAL_BUSY',
  /** The admin password file cannot be read, written or is already set. */
  MB_ERR_AUTH_FILE: 'MB_ERR_AUTH_FILE',
  /** The MDM's TLS certificate or key cannot be made or loaded. */
  MB_ERR_TLS_SETUP: 'MB_ERR_TLS_SETUP',
  /** The etcd cluster's PKI (CA, member and client pairs) cannot be made, or a pair is missing, damaged or of another CA. */
  MB_ERR_ETCD_PKI: 'MB_ERR_ETCD_PKI',
  /** `meshblock etcd start` cannot run the etcd binary (missing, not executable). */
  MB_ERR_ETCD_START: 'MB_ERR_ETCD_START',

  // --- MDM REST API: the HTTP layer's own ---
  /** No login, or a token that is not valid (expired, logged out, from before a restart). */
  MB_ERR_UNAUTHORIZED: 'MB_ERR_UNAUTHORIZED',
  /** No such path or action. */
  MB_ERR_NO_ROUTE: 'MB_ERR_NO_ROUTE',
  /** The path exists but not with this HTTP method (the reply says which are allowed). */
  MB_ERR_METHOD_NOT_ALLOWED: 'MB_ERR_METHOD_NOT_ALLOWED',
  /** The request body is above the limit. */
  MB_ERR_BODY_TOO_LARGE: 'MB_ERR_BODY_TOO_LARGE',
  /** The connection ended before the whole body arrived. */
  MB_ERR_BODY_INCOMPLETE: 'MB_ERR_BODY_INCOMPLETE',
  /** The request body is not JSON. */
  MB_ERR_MALFORMED_JSON: 'MB_ERR_MALFORMED_JSON',
  /** Too many logins in progress at once (password hashing is bounded); try again. */
  MB_ERR_TOO_MANY_LOGINS: 'MB_ERR_TOO_MANY_LOGINS',
  /** The MDM is shutting down. */
  MB_ERR_SHUTTING_DOWN: 'MB_ERR_SHUTTING_DOWN',
  /** A failure without a code of its own reached the REST API: a bug or an unexpected error. */
  MB_ERR_INTERNAL: 'MB_ERR_INTERNAL',
  /** A state-changing request authenticated by the dashboard's session cookie came without its CSRF token, or from another site. */
  MB_ERR_CSRF: 'MB_ERR_CSRF',

  // --- management CLI ---
  /** The API answered an error without a code this CLI knows, or without a body. */
  MB_ERR_API: 'MB_ERR_API',
  /** The API cannot be reached, or what answered is not a meshblock MDM. */
  MB_ERR_API_UNREACHABLE: 'MB_ERR_API_UNREACHABLE',
  /** A management command was given wrong or missing flags. */
  MB_ERR_USAGE: 'MB_ERR_USAGE',

  // --- SDS: devices, chunk store, state ---
  /** The device cannot be opened (missing, permission denied, busy). */
  MB_ERR_DEVICE_OPEN: 'MB_ERR_DEVICE_OPEN',
  /** The device holds a filesystem, partition table or label; adding it needs --force. */
  MB_ERR_DEVICE_FORMATTED: 'MB_ERR_DEVICE_FORMATTED',
  /** The device is below the minimum size. */
  MB_ERR_DEVICE_TOO_SMALL: 'MB_ERR_DEVICE_TOO_SMALL',
  /** The device shrank since it was formatted. */
  MB_ERR_DEVICE_SHRUNK: 'MB_ERR_DEVICE_SHRUNK',
  /** The device was formatted for another chunk size than this SDS uses. */
  MB_ERR_DEVICE_CHUNK_SIZE: 'MB_ERR_DEVICE_CHUNK_SIZE',
  /** The device is already open under another path. */
  MB_ERR_DEVICE_DUPLICATE: 'MB_ERR_DEVICE_DUPLICATE',
  /** The device failed (an IO error that means it cannot be trusted): its chunks are not served. */
  MB_ERR_DEVICE_FAILED: 'MB_ERR_DEVICE_FAILED',
  /** A read of the device came back short (the device shrank under the SDS). */
  MB_ERR_DEVICE_SHORT: 'MB_ERR_DEVICE_SHORT',
  /** The device's on-disk format differs from this meshblock's (e.g. its checksum block size). */
  MB_ERR_DEVICE_FORMAT: 'MB_ERR_DEVICE_FORMAT',
  /** Direct IO was asked for (sds start --io direct) and the device cannot do it: why, and --io buffered. */
  MB_ERR_DEVICE_DIRECT_IO: 'MB_ERR_DEVICE_DIRECT_IO',
  /** Stored bytes failed their checksum (rot, a misdirected write): nothing of them was returned. */
  MB_ERR_CHECKSUM: 'MB_ERR_CHECKSUM',
  /** No free chunk slot, or not enough to reserve for a thick volume. */
  MB_ERR_NO_SPACE: 'MB_ERR_NO_SPACE',
  /** A rebuild job could not copy a chunk (source read or target copy failed); its stats name the chunk, side and cause, and the MDM retries it after a backoff. */
  MB_ERR_REBUILD_COPY: 'MB_ERR_REBUILD_COPY',
  /** No meshblock superblock on the device. */
  MB_ERR_SUPERBLOCK_MAGIC: 'MB_ERR_SUPERBLOCK_MAGIC',
  /** The superblock is truncated. */
  MB_ERR_SUPERBLOCK_SHORT: 'MB_ERR_SUPERBLOCK_SHORT',
  /** The superblock's checksum does not match: it is damaged. */
  MB_ERR_SUPERBLOCK_CHECKSUM: 'MB_ERR_SUPERBLOCK_CHECKSUM',
  /** The superblock has a version this meshblock does not read. */
  MB_ERR_SUPERBLOCK_VERSION: 'MB_ERR_SUPERBLOCK_VERSION',
  /** The SDS's state file cannot be read. */
  MB_ERR_STATE_READ: 'MB_ERR_STATE_READ',
  /** The SDS's state file is damaged. */
  MB_ERR_STATE_DAMAGED: 'MB_ERR_STATE_DAMAGED',
  /** The SDS could not save its rebuild cursors (write, fsync or rename failed). */
  MB_ERR_REBUILD_CURSORS_WRITE: 'MB_ERR_REBUILD_CURSORS_WRITE',
  /** A handler failure that the SDS answers with a specific status instead of Failed. */
  MB_ERR_SDS_REPLY: 'MB_ERR_SDS_REPLY',
  /** An SDS id that the placement map does not name. */
  MB_ERR_SDS_UNKNOWN: 'MB_ERR_SDS_UNKNOWN',

  // --- SDC ---
  /** The SDC's identity file is damaged. */
  MB_ERR_SDC_IDENTITY: 'MB_ERR_SDC_IDENTITY',

  // --- wire protocol between MDM, SDS and SDC ---
  /** Fewer bytes than a frame header. */
  MB_ERR_WIRE_SHORT: 'MB_ERR_WIRE_SHORT',
  /** Not a meshblock frame (wrong magic). */
  MB_ERR_WIRE_MAGIC: 'MB_ERR_WIRE_MAGIC',
  /** The frame header's checksum does not match. */
  MB_ERR_WIRE_HEADER_CHECKSUM: 'MB_ERR_WIRE_HEADER_CHECKSUM',
  /** A protocol version this side does not speak. */
  MB_ERR_WIRE_VERSION: 'MB_ERR_WIRE_VERSION',
  /** Unknown frame flags. */
  MB_ERR_WIRE_FLAGS: 'MB_ERR_WIRE_FLAGS',
  /** Reserved header bytes are not zero. */
  MB_ERR_WIRE_RESERVED: 'MB_ERR_WIRE_RESERVED',
  /** A request id or epoch beyond 2^53. */
  MB_ERR_WIRE_RANGE: 'MB_ERR_WIRE_RANGE',
  /** A payload above the wire's limit. */
  MB_ERR_WIRE_PAYLOAD_TOO_LARGE: 'MB_ERR_WIRE_PAYLOAD_TOO_LARGE',
  /** The payload's checksum does not match. */
  MB_ERR_WIRE_PAYLOAD_CHECKSUM: 'MB_ERR_WIRE_PAYLOAD_CHECKSUM',
  /** A frame for another cluster. */
  MB_ERR_WIRE_CLUSTER: 'MB_ERR_WIRE_CLUSTER',
  /** The connection's setup (HELLO) is malformed or out of order. */
  MB_ERR_WIRE_SETUP: 'MB_ERR_WIRE_SETUP',
  /** The connection's setup did not finish in time. */
  MB_ERR_WIRE_SETUP_TIMEOUT: 'MB_ERR_WIRE_SETUP_TIMEOUT',
  /** The peer does not know the cluster secret, or may not take this role. */
  MB_ERR_WIRE_AUTH: 'MB_ERR_WIRE_AUTH',
  /** The connection closed. */
  MB_ERR_WIRE_CLOSED: 'MB_ERR_WIRE_CLOSED',
  /** The connection is closing: it takes no new requests. */
  MB_ERR_WIRE_CLOSING: 'MB_ERR_WIRE_CLOSING',
  /** The connection was destroyed by this side. */
  MB_ERR_WIRE_DESTROYED: 'MB_ERR_WIRE_DESTROYED',
  /** The socket failed. */
  MB_ERR_WIRE_SOCKET: 'MB_ERR_WIRE_SOCKET',
  /** A request got no reply in time. */
  MB_ERR_WIRE_TIMEOUT: 'MB_ERR_WIRE_TIMEOUT',
  /** A request found no room to be sent (requests in flight, or the socket backed up) within its timeout; it was not sent. */
  MB_ERR_WIRE_SEND_TIMEOUT: 'MB_ERR_WIRE_SEND_TIMEOUT',
  /** Cannot connect to the peer's address. */
  MB_ERR_WIRE_CONNECT: 'MB_ERR_WIRE_CONNECT',
  /** Connecting to the peer timed out. */
  MB_ERR_WIRE_CONNECT_TIMEOUT: 'MB_ERR_WIRE_CONNECT_TIMEOUT',
  /** The peer's own bookkeeping broke (a direct read landed outside its payload): a bug. */
  MB_ERR_WIRE_INTERNAL: 'MB_ERR_WIRE_INTERNAL',

  // --- NBD ---
  /** The NBD client broke the handshake. */
  MB_ERR_NBD_HANDSHAKE: 'MB_ERR_NBD_HANDSHAKE',
  /** The peer closed the connection while more bytes were expected. */
  MB_ERR_STREAM_ENDED: 'MB_ERR_STREAM_ENDED',
  /** A server cannot listen on its address. */
  MB_ERR_LISTEN: 'MB_ERR_LISTEN',
  /** The file behind `nbd serve --file` cannot be opened. */
  MB_ERR_FILE_OPEN: 'MB_ERR_FILE_OPEN',

  // --- daemons and the lab ---
  /** The data directory is in use by another process (its pid lock is held). */
  MB_ERR_DATA_DIR_LOCKED: 'MB_ERR_DATA_DIR_LOCKED',
  /** A shard of `sds start --shards N` failed before its first ready; the supervisor stopped the others. */
  MB_ERR_SDS_SHARD_FAILED: 'MB_ERR_SDS_SHARD_FAILED',
  /** Another `meshblock lab up` is running on this lab. */
  MB_ERR_LAB_BUSY: 'MB_ERR_LAB_BUSY',
  /** The lab's MDM runs another cluster than the lab records. */
  MB_ERR_LAB_CLUSTER: 'MB_ERR_LAB_CLUSTER',
  /** The lab record (lab.json) cannot be read or is damaged. */
  MB_ERR_LAB_FILE: 'MB_ERR_LAB_FILE',
  /** The lab's objects were moved out of the layout the lab made. */
  MB_ERR_LAB_LAYOUT: 'MB_ERR_LAB_LAYOUT',
  /** The lab's SDC does not list its NBD exports as it should. */
  MB_ERR_LAB_NBD: 'MB_ERR_LAB_NBD',
  /** No lab in the directory. */
  MB_ERR_LAB_NOT_FOUND: 'MB_ERR_LAB_NOT_FOUND',
  /** No free loopback port for the lab. */
  MB_ERR_LAB_PORTS: 'MB_ERR_LAB_PORTS',
  /** A lab process ended or was not ready in time. */
  MB_ERR_LAB_START: 'MB_ERR_LAB_START',
  /** A lab process is still running after SIGKILL. */
  MB_ERR_LAB_STOP: 'MB_ERR_LAB_STOP',
  /** The lab waited too long for a step. */
  MB_ERR_LAB_TIMEOUT: 'MB_ERR_LAB_TIMEOUT',

  // --- loadtest ---
  /** The NBD export to load cannot be reached. */
  MB_ERR_EXPORT_UNAVAILABLE: 'MB_ERR_EXPORT_UNAVAILABLE',
  /** The NBD export is read-only and the load writes. */
  MB_ERR_EXPORT_READ_ONLY: 'MB_ERR_EXPORT_READ_ONLY',
  /** fio is missing or failed. */
  MB_ERR_FIO_FAILED: 'MB_ERR_FIO_FAILED',
  /** The load was interrupted (SIGINT, SIGTERM). */
  MB_ERR_INTERRUPTED: 'MB_ERR_INTERRUPTED',

  // --- attaching volumes on a host ---
  /** The volume is already attached. */
  MB_ERR_ATTACHED: 'MB_ERR_ATTACHED',
  /** The volume is not attached here. */
  MB_ERR_NOT_ATTACHED: 'MB_ERR_NOT_ATTACHED',
  /** nbd-client (or modprobe) is not installed. */
  MB_ERR_ATTACH_TOOL: 'MB_ERR_ATTACH_TOOL',
  /** The /dev/nbdN asked for is in use. */
  MB_ERR_DEVICE_BUSY: 'MB_ERR_DEVICE_BUSY',
  /** No such /dev/nbdN, or none free. */
  MB_ERR_NO_DEVICE: 'MB_ERR_NO_DEVICE',
  /** The nbd kernel module cannot be loaded. */
  MB_ERR_NBD_MODULE: 'MB_ERR_NBD_MODULE',
  /** nbd-client failed, or its device did not come up. */
  MB_ERR_NBD_CLIENT: 'MB_ERR_NBD_CLIENT',

  // --- host checks and edits (local or over SSH) ---
  /** A host path is not absolute. */
  MB_ERR_HOST_PATH: 'MB_ERR_HOST_PATH',
  /** A host file cannot be read. */
  MB_ERR_HOST_READ: 'MB_ERR_HOST_READ',
  /** A host file cannot be written. */
  MB_ERR_HOST_WRITE: 'MB_ERR_HOST_WRITE',
  /** A host file cannot be backed up before it is edited. */
  MB_ERR_HOST_BACKUP: 'MB_ERR_HOST_BACKUP',
  /** A command cannot be started on the host. */
  MB_ERR_HOST_RUN: 'MB_ERR_HOST_RUN',
  /** A host command did not finish in time. */
  MB_ERR_HOST_RUN_TIMEOUT: 'MB_ERR_HOST_RUN_TIMEOUT',
  /** A command that inspects the host failed or said something unreadable. */
  MB_ERR_HOST_QUERY: 'MB_ERR_HOST_QUERY',
  /** A tool a host check needs is not installed. */
  MB_ERR_HOST_TOOL_MISSING: 'MB_ERR_HOST_TOOL_MISSING',
  /** The host's OS (package manager) cannot be told. */
  MB_ERR_HOST_OS_UNKNOWN: 'MB_ERR_HOST_OS_UNKNOWN',
  /** A file changed between planning and applying an edit; nothing was written. */
  MB_ERR_HOST_CHANGED: 'MB_ERR_HOST_CHANGED',
  /** A step of a host edit failed. */
  MB_ERR_HOST_STEP: 'MB_ERR_HOST_STEP',
  /** `host apply` would ask for confirmation but there is no terminal (pass --yes). */
  MB_ERR_NO_TTY: 'MB_ERR_NO_TTY',
  /** A disk wipe was refused (not a disk of this host, mounted, an NBD device, unreadable). */
  MB_ERR_WIPE_REFUSED: 'MB_ERR_WIPE_REFUSED',
  /** A XenServer SR of that name already exists. */
  MB_ERR_SR_EXISTS: 'MB_ERR_SR_EXISTS',
  /** The XenServer SR's device is not attached. */
  MB_ERR_SR_DEVICE: 'MB_ERR_SR_DEVICE',
  /** lvm.conf cannot be parsed. */
  MB_ERR_LVM_CONF_SYNTAX: 'MB_ERR_LVM_CONF_SYNTAX',
  /** A yum .repo file cannot be parsed. */
  MB_ERR_REPO_SYNTAX: 'MB_ERR_REPO_SYNTAX',
  /** A yum .repo file lacks the section to edit. */
  MB_ERR_REPO_SECTION_MISSING: 'MB_ERR_REPO_SECTION_MISSING',

  // --- SSH transport ---
  /** An SSH failure without a more specific code. */
  MB_ERR_SSH: 'MB_ERR_SSH',
  /** The SSH connection is closed. */
  MB_ERR_SSH_CLOSED: 'MB_ERR_SSH_CLOSED',
  /** A command cannot be run over SSH. */
  MB_ERR_SSH_EXEC: 'MB_ERR_SSH_EXEC',
  /** The host's key does not match known_hosts: refused (someone may be in the middle). */
  MB_ERR_SSH_HOST_KEY_CHANGED: 'MB_ERR_SSH_HOST_KEY_CHANGED',
  /** The host's key is not in known_hosts and was not to be accepted. */
  MB_ERR_SSH_HOST_KEY_UNKNOWN: 'MB_ERR_SSH_HOST_KEY_UNKNOWN',
  /** The private key cannot be used. */
  MB_ERR_SSH_KEY: 'MB_ERR_SSH_KEY',
  /** The host refused the login. */
  MB_ERR_SSH_LOGIN: 'MB_ERR_SSH_LOGIN',
  /** No key and no password to log in with. */
  MB_ERR_SSH_NO_CREDENTIALS: 'MB_ERR_SSH_NO_CREDENTIALS',
  /** The host offers no SFTP. */
  MB_ERR_SSH_SFTP: 'MB_ERR_SSH_SFTP',
  /** The host cannot be reached over SSH. */
  MB_ERR_SSH_UNREACHABLE: 'MB_ERR_SSH_UNREACHABLE',
  /** A file cannot be uploaded over SSH. */
  MB_ERR_SSH_UPLOAD: 'MB_ERR_SSH_UPLOAD',

  // --- the CSV installer ---
  /** The installation CSV is wrong; the message names the row and column. */
  MB_ERR_INSTALL_CSV: 'MB_ERR_INSTALL_CSV',
  /** A host of the CSV cannot be reached. */
  MB_ERR_INSTALL_CONNECT: 'MB_ERR_INSTALL_CONNECT',
  /** A host is not one meshblock can be installed on (e.g. not x86_64). */
  MB_ERR_INSTALL_HOST: 'MB_ERR_INSTALL_HOST',
  /** An SDS device of the CSV is missing or holds data. */
  MB_ERR_INSTALL_DEVICE: 'MB_ERR_INSTALL_DEVICE',
  /** The bundle to ship cannot be made (a build output is missing, tar failed). */
  MB_ERR_INSTALL_BUNDLE: 'MB_ERR_INSTALL_BUNDLE',
  /** The bundle cannot be uploaded. */
  MB_ERR_INSTALL_UPLOAD: 'MB_ERR_INSTALL_UPLOAD',
  /** An installation step on a host failed. */
  MB_ERR_INSTALL_STEP: 'MB_ERR_INSTALL_STEP',
  /** The installer waited too long for a daemon or a registration. */
  MB_ERR_INSTALL_TIMEOUT: 'MB_ERR_INSTALL_TIMEOUT',

  // --- the runtime bundle (meshblock bundle, src/hostsetup/runtime-bundle.ts) ---
  /** The shared libraries Node needs cannot be gathered: ldd missing or failed, a library not found, or no dynamic loader. */
  MB_ERR_BUNDLE_LIBRARIES: 'MB_ERR_BUNDLE_LIBRARIES',
  /** More than one host failed in an installer phase; the message names each and why. */
  MB_ERR_INSTALL_HOSTS: 'MB_ERR_INSTALL_HOSTS',

  // --- the event log and SNMP traps (src/mdm/events.ts, src/mdm/snmp-traps.ts) ---
  /** The event log cannot be read or written (its file, or etcd); the MDM logs it and keeps the event in memory. */
  MB_ERR_EVENT_LOG: 'MB_ERR_EVENT_LOG',
  /** Another MDM appended to the event log in etcd first: the log is read again and the event numbered after it. */
  MB_ERR_EVENT_ID_TAKEN: 'MB_ERR_EVENT_ID_TAKEN',
  /** drv-cfg found no running SDC (no state in its data directory, or its process is gone). */
  MB_ERR_SDC_NOT_RUNNING: 'MB_ERR_SDC_NOT_RUNNING',
  /** An encoded placement map or delta is truncated, corrupt or malformed (src/wire/map-codec.ts): refused whole. */
  MB_ERR_MAP_CORRUPT: 'MB_ERR_MAP_CORRUPT',
  /** A map delta was made for another base map (another epoch, or other content): the peer needs the whole map. */
  MB_ERR_MAP_BASE: 'MB_ERR_MAP_BASE',
  /** The MDM refused a peer's connection or registration: it reconnects or registers faster than its bound (src/mdm/peer-guard.ts); try again later. */
  MB_ERR_PEER_THROTTLED: 'MB_ERR_PEER_THROTTLED',
  /** The MDM refused a request of a peer, unread, because its payload is larger than that op's bound (mdmRequestBytesMax, mdmHeartbeatBytesMax). */
  MB_ERR_REQUEST_TOO_LARGE: 'MB_ERR_REQUEST_TOO_LARGE',
} as const;

export type ErrorCode = keyof typeof errorCodes;

/**
 * An errno name, as Node names it (`os.constants.errno`: EIO, ENOSPC, EOPNOTSUPP, ...), the
 * code of SystemCallError, BackendError and ShortReadError. ESHUTDOWN is not in Node's table
 * but is an NBD error a backend may raise; `E#<n>` names an errno Node cannot name.
 */
export type ErrnoCode = keyof typeof osConstants.errno | 'ESHUTDOWN' | `E#${number}`;

/** What `MeshblockError.code` can be. */
export type MeshblockCode = ErrorCode | ErrnoCode;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(errorCodes, value);
}

export function isErrnoCode(value: unknown): value is ErrnoCode {
  return typeof value === 'string' && (Object.hasOwn(osConstants.errno, value) || value === 'ESHUTDOWN' || /^E#\d+$/.test(value));
}

/** For a code that arrived from another process: is it one this build knows? */
export function isMeshblockCode(value: unknown): value is MeshblockCode {
  return isErrorCode(value) || isErrnoCode(value);
}

export class MeshblockError extends Error {
  readonly code: MeshblockCode;

  constructor(code: MeshblockCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A user-supplied value (CLI flag, REST field, config key) is wrong. Names the field. */
export class InvalidArgumentError extends MeshblockError {
  declare readonly code: 'MB_ERR_INVALID_ARGUMENT';
  readonly field: string;

  constructor(field: string, message: string) {
    super('MB_ERR_INVALID_ARGUMENT', `${field}: ${message}`);
    this.field = field;
  }
}

/** A value is outside its allowed range, in the shape of Node's ERR_OUT_OF_RANGE. */
export class OutOfRangeError extends MeshblockError {
  declare readonly code: 'MB_ERR_OUT_OF_RANGE';
  readonly field: string;

  constructor(field: string, range: string, value: unknown) {
    super('MB_ERR_OUT_OF_RANGE', `${field}: must be ${range}, got ${String(value)}`);
    this.field = field;
  }
}

/** One of our own invariants broke. Never caused by input; always a bug. */
export class AssertionError extends MeshblockError {
  declare readonly code: 'MB_ERR_ASSERTION';

  constructor(message: string) {
    super('MB_ERR_ASSERTION', message);
  }
}

/**
 * A system call failed; `code` is the errno name (`EIO`, `ENOSPC`, `EOPNOTSUPP`, ...), so
 * the NBD and wire layers can map it to what their protocols can carry.
 */
export class SystemCallError extends MeshblockError {
  declare readonly code: ErrnoCode;

  constructor(code: ErrnoCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
