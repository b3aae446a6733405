#!/usr/bin/env bash
# Single-node Ceph RGW on 127.0.0.1 for the S3 tests: one monitor, one BlueStore OSD on a sparse
# file, one radosgw. Safe to run again: packages are installed only when missing, and a running
# instance that still answers S3 requests is reused as it is.
#
# Usage:  eval "$(e2e/s3/start-ceph-rgw.sh)"
#   stdout: `export PBS_TEST_S3_*=...` lines for the tests; progress goes to stderr.
# Env:    PBS_TEST_S3_DIR (state, default ~/.cache/pbs-cloud/ceph-rgw), PBS_TEST_S3_PORT (7480).
# Stop:   e2e/s3/start-ceph-rgw.sh --stop
# Buckets: `pbs-test` (plain) and `pbs-lock` (versioning + Object Lock).
set -euo pipefail

DIR=${PBS_TEST_S3_DIR:-$HOME/.cache/pbs-cloud/ceph-rgw}
PORT=${PBS_TEST_S3_PORT:-7480}
ENDPOINT="http://127.0.0.1:$PORT"
ACCESS_KEY=pbstestaccess
SECRET_KEY=pbstestsecret0123456789
CONF=$DIR/ceph.conf

log() { echo "start-ceph-rgw: $*" >&2; }

stop_all() {
    local f
    for f in "$DIR"/run/*.pid; do
        [ -e "$f" ] || continue
        kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 2
}

if [ "${1:-}" = "--stop" ]; then
    stop_all
    exit 0
fi

print_env() {
    echo "export PBS_TEST_S3_ENDPOINT='$ENDPOINT'"
    echo "export PBS_TEST_S3_ACCESS_KEY='$ACCESS_KEY'"
    echo "export PBS_TEST_S3_SECRET_KEY='$SECRET_KEY'"
    echo "export PBS_TEST_S3_BUCKET='pbs-test'"
    echo "export PBS_TEST_S3_LOCK_BUCKET='pbs-lock'"
    echo "export PBS_TEST_S3_KMS_KEY_ID='$KMS_KEY_ID'"
}

# A signed S3 request with curl's built-in SigV4 (curl >= 7.75). RGW insists on the
# x-amz-content-sha256 header, which curl 7.88 only signs when it is given.
s3() {
    local method=$1 path=$2 how
    shift 2
    # `-X HEAD` would wait for a body that never comes
    how=(-X "$method")
    [ "$method" = HEAD ] && how=(--head)
    curl -sS -o /dev/null -w '%{http_code}' --max-time 30 "${how[@]}" \
        --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@" "$ENDPOINT/$path"
}

healthy() {
    local code
    code=$(s3 GET "" 2>/dev/null) || return 1
    [ "$code" = 200 ]
}

ensure_bucket() {
    local name=$1 code
    shift
    code=$(s3 HEAD "$name")
    if [ "$code" = 200 ]; then
        return 0
    fi
    for _ in $(seq 1 30); do
        code=$(s3 PUT "$name" "$@")
        case "$code" in
        200 | 409) return 0 ;;
        esac
        sleep 1
    done
    log "creating bucket $name failed (HTTP $code)"
    return 1
}

create_buckets() {
    ensure_bucket pbs-test
    ensure_bucket pbs-lock -H 'x-amz-bucket-object-lock-enabled: true'
}

# SSE-KMS for the tests: RGW's built-in test key store (not for production), over plain HTTP.
KMS_KEY_ID=pbs-test-key
kms_conf() {
    # a fixed 32-byte test key, base64
    echo "rgw_crypt_s3_kms_backend = testing"
    echo "rgw_crypt_s3_kms_encryption_keys = $KMS_KEY_ID=cGJzLWNsb3VkOiB0ZXN0IGtleSBmb3IgU1NFLUtNUyE="
    echo "rgw_crypt_require_ssl = false"
}

start_rgw() {
    radosgw -c "$CONF" -n client.rgw.a >&2
    for _ in $(seq 1 120); do
        curl -s -o /dev/null "$ENDPOINT/" && break
        sleep 1
    done
}

if healthy; then
    if [ -f "$CONF" ] && ! grep -q rgw_crypt_s3_kms_backend "$CONF"; then
        # An instance from before the test key store: add it and restart radosgw only.
        log "adding the SSE-KMS test key store and restarting radosgw"
        kms_conf >>"$CONF"
        kill "$(cat "$DIR/run/ceph-client.rgw.a.pid")" 2>/dev/null || true
        for _ in $(seq 1 30); do
            healthy || break
            sleep 1
        done
        start_rgw
        for _ in $(seq 1 60); do
            healthy && break
            sleep 1
        done
    fi
    if healthy; then
        log "reusing the running RGW at $ENDPOINT"
        create_buckets
        print_env
        exit 0
    fi
fi

if ! command -v radosgw >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v ceph-mon >/dev/null; then
    log "installing radosgw ceph-mon ceph-osd (Debian packages, about 2 minutes)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        radosgw ceph-mon ceph-osd curl >&2
fi

# Not healthy: stop whatever is left of an earlier instance and build a fresh one.
if [ -d "$DIR/run" ]; then
    log "an earlier instance in $DIR does not answer; recreating it"
    stop_all
fi
rm -rf "$DIR"
mkdir -p "$DIR"/{run,log,mon,osd/ceph-0}
FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
run_dir = $DIR/run
admin_socket = $DIR/run/\$cluster-\$name.asok
log_file = $DIR/log/\$cluster-\$name.log
pid_file = $DIR/run/\$cluster-\$name.pid
mon_data = $DIR/mon/\$cluster-\$id
osd_data = $DIR/osd/\$cluster-\$id
keyring = $DIR/keyring
# one OSD: no replication, few placement groups
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_max_pg_per_osd = 1000
mon_warn_on_pool_no_redundancy = false
osd_crush_chooseleaf_type = 0
# BlueStore on a sparse 20 GiB file (only written blocks use disk)
osd_objectstore = bluestore
bluestore_block_path = $DIR/osd/ceph-0/block.file
bluestore_block_create = true
bluestore_block_size = 21474836480
osd_memory_target = 1073741824
bluestore_cache_autotune = false
bluestore_cache_size = 268435456
[osd]
keyring = \$osd_data/keyring
[client.rgw.a]
keyring = $DIR/rgw.keyring
rgw_frontends = beast endpoint=127.0.0.1:$PORT
rgw_data = $DIR/rgw
EOF
kms_conf >>"$CONF"

log "creating monitor"
monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid "$FSID" "$DIR/monmap" >/dev/null
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$DIR/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
ceph-mon -c "$CONF" -i a

log "creating OSD"
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
ceph -c "$CONF" --connect-timeout 30 osd new "$OSD_UUID" >/dev/null
ceph -c "$CONF" auth get-or-create osd.0 mon 'allow profile osd' osd 'allow *' \
    mgr 'allow profile osd' -o "$DIR/osd/ceph-0/keyring"
ceph -c "$CONF" auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' \
    mgr 'allow rw' -o "$DIR/rgw.keyring"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" 2>/dev/null
ceph-osd -c "$CONF" -i 0 2>/dev/null
for _ in $(seq 1 60); do
    ceph -c "$CONF" osd stat 2>/dev/null | grep -q '1 up' && break
    sleep 1
done

log "starting radosgw on $ENDPOINT"
start_rgw
radosgw-admin -c "$CONF" user create --uid=pbs-test --display-name=pbs-test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null
for _ in $(seq 1 60); do
    healthy && break
    sleep 1
done
healthy || {
    log "RGW does not answer signed requests at $ENDPOINT; see $DIR/log"
    exit 1
}
create_buckets
log "ready: $ENDPOINT (state in $DIR)"
print_env
