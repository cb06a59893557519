// Package rbacoracle is the oracle of test/integration/l7-intentions-differential.test.ts: the HTTP
// RBAC filter that Consul v1.16.2's own xDS generator gives Envoy for a set of intentions.
//
// TestOracle reads the cases from the JSON file named by RBAC_ORACLE_IN and writes the answers to
// RBAC_ORACLE_OUT (without RBAC_ORACLE_IN it checks one built-in case, so `go test` alone proves it
// still builds and runs). A case is a list of service-intentions config entries (as written to
// PUT /v1/config: {"Kind":"service-intentions","Name":"web"|"*","Sources":[...]}) and the default
// decision. For each case the entries go through what Consul's servers do with a config entry
// write and an intention match:
//
//   - structs.DecodeConfigEntry (the HTTP API's decoder), Normalize (methods upper-cased,
//     precedence computed) and Validate: a refused entry is answered with its error;
//   - ToIntentions, each intention's precedence cross-checked with Intention.UpdatePrecedence, then
//     the intentions of destination `web` (those of `web` and of `*`) sorted with
//     IntentionPrecedenceSorter, as the server's intention match and proxycfg's ServerIntentions;
//
// then into a web sidecar snapshot (proxycfg.TestConfigSnapshot with protocol http, the intentions
// delivered as the "intentions" watch update, snap.IntentionDefaultAllow set), through
// xds.NewResourceGenerator(...).AllResourcesFromSnapshot, and the envoy.filters.http.rbac filter of
// the public listener's HTTP connection manager is answered as protojson, with the intentions
// (Consul's JSON, as GET /v1/connect/intentions/match returns them) and the snapshot's trust domain.
package rbacoracle

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	envoy_listener_v3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	envoy_http_rbac_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	envoy_hcm_v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hashicorp/consul/agent/proxycfg"
	"github.com/hashicorp/consul/agent/structs"
	"github.com/hashicorp/consul/agent/xds"
	"github.com/hashicorp/consul/envoyextensions/xdscommon"
)

type oracleInput struct {
	Cases []oracleCase `json:"cases"`
}

type oracleCase struct {
	DefaultAllow bool                     `json:"defaultAllow"`
	Entries      []map[string]interface{} `json:"entries"`
}

type oracleAnswer struct {
	// Error: Consul refused an entry (decode, normalize or validate) or the generator failed.
	Error string `json:"error,omitempty"`
	// Intentions for destination web, highest precedence first, as Consul's JSON.
	Intentions []*structs.Intention `json:"intentions,omitempty"`
	// RBAC is the typed config of the envoy.filters.http.rbac filter, as protojson.
	RBAC        json.RawMessage `json:"rbac,omitempty"`
	TrustDomain string          `json:"trustDomain,omitempty"`
}

type oracleOutput struct {
	Answers []oracleAnswer `json:"answers"`
}

func TestOracle(t *testing.T) {
	inPath, outPath := os.Getenv("RBAC_ORACLE_IN"), os.Getenv("RBAC_ORACLE_OUT")
	if inPath == "" {
		selfCheck(t)
		return
	}
	if outPath == "" {
		t.Fatal("RBAC_ORACLE_OUT must name the output file when RBAC_ORACLE_IN is set")
	}
	raw, err := os.ReadFile(inPath)
	if err != nil {
		t.Fatal(err)
	}
	var in oracleInput
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatalf("%s: %v", inPath, err)
	}
	out := oracleOutput{Answers: make([]oracleAnswer, 0, len(in.Cases))}
	for _, c := range in.Cases {
		out.Answers = append(out.Answers, answer(t, c))
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// selfCheck: finding 2 of /work/shared/L7.md, the allow-list Consul generates for it.
func selfCheck(t *testing.T) {
	a := answer(t, oracleCase{
		DefaultAllow: false,
		Entries: []map[string]interface{}{
			{"Kind": "service-intentions", "Name": "web", "Sources": []interface{}{
				map[string]interface{}{"Name": "db", "Permissions": []interface{}{
					map[string]interface{}{"Action": "allow", "HTTP": map[string]interface{}{"PathPrefix": "/a"}},
				}},
				map[string]interface{}{"Name": "*", "Action": "deny"},
			}},
			{"Kind": "service-intentions", "Name": "*", "Sources": []interface{}{
				map[string]interface{}{"Name": "api", "Action": "allow"},
				map[string]interface{}{"Name": "db", "Action": "allow"},
			}},
		},
	})
	if a.Error != "" {
		t.Fatal(a.Error)
	}
	rbac := string(a.RBAC)
	for _, want := range []string{`"consul-intentions-layer4"`, `"consul-intentions-layer7-0"`, `/svc/api$`, `"prefix":"/a"`} {
		if !strings.Contains(rbac, want) {
			t.Errorf("RBAC lacks %s: %s", want, rbac)
		}
	}
	if strings.Contains(rbac, `"action":"DENY"`) || len(a.Intentions) != 4 {
		t.Errorf("unexpected answer: %d intentions, RBAC %s", len(a.Intentions), rbac)
	}
}

func answer(t *testing.T, c oracleCase) oracleAnswer {
	var ixns structs.Intentions
	for i, raw := range c.Entries {
		entry, err := structs.DecodeConfigEntry(raw)
		if err != nil {
			return oracleAnswer{Error: fmt.Sprintf("entry %d: decode: %v", i, err)}
		}
		si, ok := entry.(*structs.ServiceIntentionsConfigEntry)
		if !ok {
			return oracleAnswer{Error: fmt.Sprintf("entry %d: kind %s, want service-intentions", i, entry.GetKind())}
		}
		if err := si.Normalize(); err != nil {
			return oracleAnswer{Error: fmt.Sprintf("entry %d: normalize: %v", i, err)}
		}
		if err := si.Validate(); err != nil {
			return oracleAnswer{Error: fmt.Sprintf("entry %d: validate: %v", i, err)}
		}
		if si.Name != "web" && si.Name != structs.WildcardSpecifier {
			return oracleAnswer{Error: fmt.Sprintf("entry %d: destination %q, want web or *", i, si.Name)}
		}
		for _, ixn := range si.ToIntentions() {
			check := *ixn
			check.UpdatePrecedence()
			if check.Precedence != ixn.Precedence {
				return oracleAnswer{Error: fmt.Sprintf("entry %d: %s: normalized precedence %d, UpdatePrecedence %d", i, ixn.SourceName, ixn.Precedence, check.Precedence)}
			}
			ixns = append(ixns, ixn)
		}
	}
	sort.Sort(structs.IntentionPrecedenceSorter(ixns))

	snap := proxycfg.TestConfigSnapshot(t, func(ns *structs.NodeService) {
		ns.Proxy.Config["protocol"] = "http"
	}, []proxycfg.UpdateEvent{{CorrelationID: "intentions", Result: structs.SimplifiedIntentions(ixns)}})
	snap.IntentionDefaultAllow = c.DefaultAllow

	resources, err := xds.NewResourceGenerator(hclog.NewNullLogger(), nil, false).AllResourcesFromSnapshot(snap)
	if err != nil {
		return oracleAnswer{Error: fmt.Sprintf("xds: %v", err)}
	}
	rbac, err := publicRBAC(resources[xdscommon.ListenerType])
	if err != nil {
		return oracleAnswer{Error: err.Error()}
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rbac)
	if err != nil {
		return oracleAnswer{Error: fmt.Sprintf("protojson: %v", err)}
	}
	if ixns == nil {
		ixns = structs.Intentions{}
	}
	return oracleAnswer{Intentions: ixns, RBAC: js, TrustDomain: snap.Roots.TrustDomain}
}

// publicRBAC finds the envoy.filters.http.rbac filter in the public listener's HTTP connection
// manager: exactly one public listener, every filter chain carrying the same RBAC config.
func publicRBAC(listeners []proto.Message) (*envoy_http_rbac_v3.RBAC, error) {
	var found *envoy_http_rbac_v3.RBAC
	publics := 0
	for _, msg := range listeners {
		l, ok := msg.(*envoy_listener_v3.Listener)
		if !ok || !strings.HasPrefix(l.Name, "public_listener:") {
			continue
		}
		publics++
		for _, chain := range l.FilterChains {
			for _, f := range chain.Filters {
				if f.Name != "envoy.filters.network.http_connection_manager" {
					continue
				}
				hcm := &envoy_hcm_v3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					return nil, fmt.Errorf("public listener HCM: %v", err)
				}
				for _, hf := range hcm.HttpFilters {
					if hf.Name != "envoy.filters.http.rbac" {
						continue
					}
					rbac := &envoy_http_rbac_v3.RBAC{}
					if err := hf.GetTypedConfig().UnmarshalTo(rbac); err != nil {
						return nil, fmt.Errorf("public listener RBAC: %v", err)
					}
					if found != nil && !proto.Equal(found, rbac) {
						return nil, fmt.Errorf("public listener: filter chains carry different RBAC filters")
					}
					found = rbac
				}
			}
		}
	}
	if publics != 1 {
		return nil, fmt.Errorf("%d public listeners, want 1", publics)
	}
	if found == nil {
		return nil, fmt.Errorf("public listener: no envoy.filters.http.rbac filter (is the protocol http?)")
	}
	return found, nil
}
