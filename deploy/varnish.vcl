# Varnish 7 (Debian's varnish with varnish-modules) in front of nginx and ross, purged by ross
# by surrogate key. ross (and nginx, with the site of `ross nginx-config`) tag every image
# with Surrogate-Key: "ross k-{key} m-{mode} s-{w}x{h}" (output.surrogate_keys); this VCL
# indexes those tags with the xkey module, and takes ross's purges: PURGE with the tags in an
# xkey-purge header, from the addresses in `purgers` only.
#
# In ross's settings:
#   [cdn.varnish]
#   kind = "varnish"
#   url = "http://127.0.0.1:6081/"     # where this Varnish listens
#
# Set the backend to nginx (or ross) on this host.

vcl 4.1;

import std;
import xkey;

backend default {
    .host = "127.0.0.1";
    .port = "80";
}

# Who may purge: ross's nodes.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "No xkey-purge header"));
        }
        set req.http.n-gone = xkey.purge(req.http.xkey-purge);
        return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
    }
}

sub vcl_backend_response {
    # xkey indexes the xkey header: the tags ross sends as Surrogate-Key are copied there.
    if (beresp.http.Surrogate-Key) {
        std.collect(beresp.http.Surrogate-Key, " ");
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
}

sub vcl_deliver {
    # The tags are for caches, not browsers.
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
}
