# A Nomad job whose Consul Connect sidecar is haproxy-connect instead of Envoy.
#
# `web` listens on 127.0.0.1:8080 in the allocation's network namespace and calls `api` through
# its upstream listener on 127.0.0.1:9191; the sidecar terminates mutual TLS on the proxy port
# Nomad allocates, authorizes callers against intentions, and forwards to 127.0.0.1:8080.
#
# What the Nomad client node needs (see README, "Deploying"):
#   - node 20.18+, haproxy 2.6+ and haproxy-connect installed on the host, under /usr (the exec
#     driver's default chroot copies /usr, /etc, /lib, /lib64, /bin, /sbin into the task):
#       apt-get install haproxy && npm install -g ./haproxy-connect-<version>.tgz
#   - the local Consul agent's HTTP API reachable from inside the allocation's network namespace:
#     127.0.0.1 there is the allocation's own loopback, so the agent must also listen on the node's
#     address (`client_addr = "127.0.0.1 {{ GetPrivateIP }}"` in the agent's configuration) —
#     Nomad gives sidecar tasks no CONSUL_HTTP_ADDR and no HTTP socket of their own;
#   - what Nomad needs for Envoy anyway: Nomad runs its Envoy bootstrap step
#     (`consul connect envoy -bootstrap`, Consul's gRPC port) for every connect-proxy task, whatever
#     its driver. haproxy-connect does not read the file it writes (secrets/envoy_bootstrap.json),
#     but the task does not start unless that step succeeds.
#
# Not supported with haproxy-connect: `transparent_proxy`, `expose` paths and `check { expose = true }`
# (Envoy listeners), and the Envoy-only `config` keys (envoy_*, which are ignored).

job "web" {
  datacenters = ["dc1"]

  group "web" {
    network {
      # Connect sidecars need bridge (or CNI) networking: the app, its sidecar and HAProxy share
      # the allocation's network namespace.
      mode = "bridge"
    }

    service {
      name = "web"
      # A literal port: the app's port inside the namespace. It is also the service's port label,
      # and so part of the service ID below.
      port = "8080"

      connect {
        sidecar_service {
          proxy {
            # HAProxy runs the public listener and the upstreams in HTTP mode.
            config {
              protocol = "http"
            }
            upstreams {
              destination_name = "api"
              local_bind_port  = 9191
            }
          }
        }

        # Replaces the Envoy task Nomad would add. Nomad still gives it the kind
        # connect-proxy:web, registers the proxy service `<service ID>-sidecar-proxy` with the
        # local Consul agent (Port = a dynamic host port; Proxy.Config.bind_address = 0.0.0.0 and
        # bind_port = the same port inside the namespace, both read by haproxy-connect), runs it as
        # a prestart sidecar (started before `web`, restarted while `web` runs), and stops it after
        # `web`.
        sidecar_task {
          name   = "connect-proxy-web"
          driver = "exec"

          config {
            command = "/usr/bin/haproxy-connect"
            args = [
              # The service ID Nomad registers for a group service:
              #   _nomad-task-<alloc ID>-group-<group>-<service>-<port label>
              # haproxy-connect serves the connect-proxy registration whose
              # Proxy.DestinationServiceID is that ID (the proxy itself is <ID>-sidecar-proxy).
              # The flag is the one the original haproxy-consul-connect used.
              "-sidecar-for", "_nomad-task-${NOMAD_ALLOC_ID}-group-${NOMAD_GROUP_NAME}-web-8080",
              # The run directory (haproxy.cfg, the leaf certificate and key, sockets) goes to the
              # task's secrets directory: in-memory, private to the task, gone with the allocation.
              # Under exec it is /secrets (raw_exec: a host path about 85 bytes long, too long for
              # HAProxy's socket paths — use a short host directory such as /run/haproxy-connect).
              "-haproxy-cfg-base-path", "${NOMAD_SECRETS_DIR}",
              "-haproxy", "/usr/sbin/haproxy",
              # Keep below kill_timeout minus about 5 s (HAProxy's SIGTERM -> SIGKILL takes 3 s).
              "-shutdown-grace", "10s",
            ]
          }

          env {
            # The Consul agent on this node, by its address (see the top of this file).
            CONSUL_HTTP_ADDR = "${attr.unique.network.ip-address}:8500"
            # With Consul ACLs, Nomad writes the service identity token for `web` to
            # secrets/si_token (service:write on web and web-sidecar-proxy, read on every service,
            # which includes reading intentions). Without ACLs that file does not exist:
            # remove this line, or the start fails with CONFIG_INVALID (exit 2).
            CONSUL_HTTP_TOKEN_FILE = "${NOMAD_SECRETS_DIR}/si_token"
          }

          # Stop: Nomad deregisters the sidecar from Consul, waits shutdown_delay so that callers'
          # sidecars stop sending here, then sends kill_signal to the daemon only (the exec driver
          # signals the task's first process); after kill_timeout it kills everything left in the
          # task's container, HAProxy included. haproxy-connect drains within -shutdown-grace and
          # exits 0 on its own before that.
          kill_signal    = "SIGTERM"
          kill_timeout   = "20s"
          shutdown_delay = "5s"

          resources {
            cpu    = 250 # MHz
            memory = 192 # MB: the daemon's RSS is about 70-80 MiB, HAProxy's about 30-35 MiB
          }

          logs {
            max_files     = 2
            max_file_size = 10 # MB: one JSON line per event, HAProxy's messages included
          }
        }
      }
    }

    # A crash of the sidecar task: Nomad restarts it under the group's restart policy; the exec
    # driver has stopped the old HAProxy with the task, and the new daemon removes what the old one
    # left in the secrets directory (its owner record names the run directory).
    restart {
      attempts = 5
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "web" {
      driver = "exec"

      config {
        command = "/usr/local/bin/web"
        args    = ["-listen", "127.0.0.1:8080", "-api", "http://127.0.0.1:9191"]
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
