package broker_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/testutil"
)

// runScriptGroups is runScript with the child's supplementary groups set.
func runScriptGroups(t *testing.T, h *harness, uid, gid int, groups []uint32, steps ...map[string]any) []stepResult {
	t.Helper()
	script, _ := json.Marshal(steps)
	cmd := testutil.Child(t, "script", uid, gid, "COMMY_SOCK="+h.sock, "COMMY_SCRIPT="+string(script))
	cmd.SysProcAttr.Credential.Groups = groups
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("script child: %v: %s", err, stderr.String())
	}
	var res []stepResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("script child said %q: %v", out, err)
	}
	return res
}

// TestGroupsFromKernel: group grants follow the groups the connecting
// process holds (SO_PEERGROUPS), not what /etc/group lists for its uid.
func TestGroupsFromKernel(t *testing.T) {
	testutil.RequireRoot(t)
	const runtimeGroup = 4242 // in no /etc/group entry for uid 65534
	member, memberGID, listed := groupMember(t)
	src := fmt.Sprintf(`
[[grant]]
groups = ["%d"]
tenants = ["acme"]
rights = ["read"]
`, runtimeGroup)
	if listed != 0 {
		src += fmt.Sprintf(`
[[grant]]
groups = ["%d"]
tenants = ["acme"]
rights = ["read"]
`, listed)
	}
	h := start(t, broker.Config{Policy: mustPolicy(t, src)})
	seedService(t, h, "acme", "orders")
	read := map[string]any{"type": "ReadVariable", "service_id": "acme_orders", "variable_name": "v"}

	if r := runScriptGroups(t, h, testutil.Nobody, testutil.Nobody, []uint32{runtimeGroup}, read); r[0].Reply != "VariableData" {
		t.Errorf("uid 65534 holding group %d: %s, want VariableData", runtimeGroup, r[0].Reply)
	}
	if r := runScriptGroups(t, h, testutil.Nobody, testutil.Nobody, nil, read); r[0].Reply != "PERMISSION_DENIED" {
		t.Errorf("uid 65534 without groups: %s, want PERMISSION_DENIED", r[0].Reply)
	}
	if listed == 0 {
		t.Log("no user with a supplementary group in /etc/group; the dropped-group case is not run")
		return
	}
	if r := runScriptGroups(t, h, member, memberGID, nil, read); r[0].Reply != "PERMISSION_DENIED" {
		t.Errorf("uid %d that dropped group %d: %s, want PERMISSION_DENIED", member, listed, r[0].Reply)
	}
	if r := runScriptGroups(t, h, member, memberGID, []uint32{uint32(listed)}, read); r[0].Reply != "VariableData" {
		t.Errorf("uid %d holding group %d: %s, want VariableData", member, listed, r[0].Reply)
	}
}

// groupMember finds a user other than root that /etc/group lists as a
// member of a group other than its primary one.
func groupMember(t *testing.T) (uid, gid, group int) {
	t.Helper()
	f, err := os.Open("/etc/group")
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) != 4 || fields[3] == "" {
			continue
		}
		g, err := strconv.Atoi(fields[2])
		if err != nil {
			continue
		}
		for _, name := range strings.Split(fields[3], ",") {
			u, err := user.Lookup(name)
			if err != nil {
				continue
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			if uid != 0 && gid != g {
				return uid, gid, g
			}
		}
	}
	return 0, 0, 0
}
