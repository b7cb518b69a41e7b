#!/usr/bin/env bash
# A private Postfix relay for the benchmark, configured like the reference in issue 6:
# STARTTLS required, SASL PLAIN/LOGIN via Cyrus sasldb, smtpd_tls_auth_only=yes, relayhost = the
# sink, default queue fsync. Everything lives under DIR (config_directory, queue_directory,
# data_directory, sasldb, certificate, log); the system's Postfix (/etc/postfix) is not touched.
#
#   postfix.sh start DIR SMTP_PORT SINK_PORT USERS_FILE [stock|tuned]   # USERS_FILE: "user password" per line
#   postfix.sh stop DIR
#
# stock (the default): Postfix's own concurrency, as issue 6's reference ran it. tuned: raised as
# an operator relaying everything to one smarthost would (issue 30), the peer of issue 30's targets.
#
# Needs root (Postfix's master runs as root and drops to mail_owner) and the Debian packages
# postfix, sasl2-bin and libsasl2-modules.
set -euo pipefail

command=${1:?start|stop}
dir=${2:?directory}
hostname=bench.postfix.local

case "$command" in
start)
  smtp_port=${3:?smtp port}
  sink_port=${4:?sink port}
  users_file=${5:?users file}
  concurrency=${6:-stock}
  case "$concurrency" in
  stock | tuned) ;;
  *)
    echo "$0: concurrency must be stock or tuned, not $concurrency" >&2
    exit 2
    ;;
  esac
  mkdir -p "$dir/etc/sasl" "$dir/queue" "$dir/data" "$dir/log"
  chown postfix "$dir/data"

  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$hostname" \
    -keyout "$dir/etc/key.pem" -out "$dir/etc/cert.pem" 2>/dev/null
  chmod 600 "$dir/etc/key.pem"

  # Cyrus SASL: smtpd (as user postfix) reads smtpd.conf from cyrus_sasl_config_path (Debian's
  # build looks in $config_directory/sasl whatever that says, so both are the same directory).
  cat >"$dir/etc/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $dir/etc/sasl/sasldb2
mech_list: PLAIN LOGIN
EOF
  while read -r user password; do
    [ -n "$user" ] || continue
    printf '%s' "$password" | saslpasswd2 -p -c -f "$dir/etc/sasl/sasldb2" -u "$hostname" "$user"
  done <"$users_file"
  chgrp postfix "$dir/etc/sasl/sasldb2"
  chmod 640 "$dir/etc/sasl/sasldb2"

  cat >"$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $hostname
mydomain = postfix.local
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$sink_port
smtp_tls_security_level = none
smtpd_tls_cert_file = $dir/etc/cert.pem
smtpd_tls_key_file = $dir/etc/key.pem
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $dir/etc/sasl
smtpd_sasl_local_domain = $hostname
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
# the 25 MB scenario (default is 10 MB)
message_size_limit = 30000000
# the load comes from one address: the per-client limits would measure anvil, not Postfix
smtpd_client_connection_count_limit = 0
biff = no
maillog_file_prefixes = $dir/log
maillog_file = $dir/log/postfix.log
EOF
  if [ "$concurrency" = tuned ]; then
    # One smarthost takes everything: up to 100 parallel deliveries to it (stock: 20), starting at
    # 20 (stock: 5) rather than climbing there; room for that many smtp and smtpd processes each
    # (stock: 100); no in-flow delay, which pauses a client's next message up to 1 s while messages
    # arrive faster than they are delivered (stock: 1s).
    cat >>"$dir/etc/main.cf" <<EOF
smtp_destination_concurrency_limit = 100
initial_destination_concurrency = 20
default_process_limit = 300
in_flow_delay = 0s
EOF
  fi

  # The stock service table with every service unchrooted (a chroot would need copies of
  # libraries and the sasldb inside the queue directory) and smtpd on our port.
  cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$smtp_port inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

  postfix -c "$dir/etc" set-permissions >/dev/null 2>&1 || true
  # postfix(1) reports to stderr only on a terminal, else to syslog (absent here): check with postconf first.
  postfix -c "$dir/etc" check
  postfix -c "$dir/etc" start
  ;;
stop)
  postfix -c "$dir/etc" stop >/dev/null 2>&1 || postfix -c "$dir/etc" abort >/dev/null 2>&1 || true
  ;;
*)
  echo "usage: $0 start DIR SMTP_PORT SINK_PORT USERS_FILE [stock|tuned] | stop DIR" >&2
  exit 2
  ;;
esac
