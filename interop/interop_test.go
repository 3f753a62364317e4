package interop_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m, nil) }

// python is Debian's interpreter, which has python3-cbor2 (.ci/run installs it).
const python = "/usr/bin/python3"

// TestPythonClient runs commy_client.py, written from the docs, against a
// real broker on both backends.
func TestPythonClient(t *testing.T) {
	if err := exec.Command(python, "-c", "import cbor2").Run(); err != nil {
		t.Skipf("%s with cbor2 is not installed (apt-get install python3-cbor2): %v", python, err)
	}
	for _, backend := range []string{broker.BackendFile, broker.BackendMemfd} {
		t.Run(backend, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "commy-py")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			b, err := broker.New(broker.Config{DataDir: filepath.Join(dir, "data"), Backend: backend})
			if err != nil {
				t.Fatal(err)
			}
			l, err := broker.Listen(filepath.Join(dir, "s.sock"), 0o666)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				b.Serve(l)
			}()
			defer func() {
				b.Close()
				<-done
			}()
			out, err := exec.Command(python, "commy_client.py", filepath.Join(dir, "s.sock")).CombinedOutput()
			if err != nil {
				t.Fatalf("python client: %v\n%s", err, out)
			}
		})
	}
}
