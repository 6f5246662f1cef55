# Sourced by /init (guest/init.sh) of `cargo xtask nested-test` instead of sending the
# artifacts over ttyS1: one uncompressed tar onto the writable 9p share (gzip and base64
# are slow under TCG, and the screenshots are megabytes).
tar -cf /out/artifacts.tar -C /artifacts . && sync
echo "KTEST-ARTIFACTS $(wc -c < /out/artifacts.tar) uptime=$(up)"
