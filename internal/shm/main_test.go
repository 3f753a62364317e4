package shm

import (
	"testing"

	"github.com/commy/commy/internal/testutil"
)

func TestMain(m *testing.M) {
	testutil.Main(m, testutil.Children{"attack": attackChild, "wait": waitChild})
}
