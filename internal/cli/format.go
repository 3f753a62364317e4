package cli

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	ucli "github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Value formats. "auto" is for people and never ambiguous: printable UTF-8
// text in double quotes (Go escapes), anything else as hex:... Scripts pick
// one of the others.
const (
	fmtAuto   = "auto"
	fmtText   = "text"
	fmtHex    = "hex"
	fmtBase64 = "base64"
	fmtRaw    = "raw"
)

// formatFlag is --format for commands that print values; JSON output takes
// text, hex or base64 and defaults to base64.
func formatFlag() *ucli.StringFlag {
	return &ucli.StringFlag{Name: "format", Usage: "how to print values: auto (\"quoted text\" or hex:...; the default), text, hex, base64 or raw (the bytes as they are); with --json: base64 (default), text or hex"}
}

// inputFlag is --format for commands that take a VALUE.
func inputFlag() *ucli.StringFlag {
	return &ucli.StringFlag{Name: "format", Value: fmtText, Usage: "how VALUE is written: text, hex or base64"}
}

// outFormat is the --format of c, with its default.
func outFormat(c *ucli.Context) (string, error) {
	f := c.String("format")
	if c.Bool("json") {
		switch f {
		case "":
			return fmtBase64, nil
		case fmtText, fmtHex, fmtBase64:
			return f, nil
		}
		return "", usagef("--format %q with --json: want base64, text or hex", f)
	}
	switch f {
	case "":
		return fmtAuto, nil
	case fmtAuto, fmtText, fmtHex, fmtBase64, fmtRaw:
		return f, nil
	}
	return "", usagef("--format %q: want auto, text, hex, base64 or raw", f)
}

// encode renders data in format f (not raw).
func encode(data []byte, f string) (string, error) {
	switch f {
	case fmtAuto:
		if printable(data) {
			return strconv.Quote(string(data)), nil
		}
		return "hex:" + hex.EncodeToString(data), nil
	case fmtText:
		if !utf8.Valid(data) {
			return "", badValuef("the value is not UTF-8 text; use --format hex or base64")
		}
		return string(data), nil
	case fmtHex:
		return hex.EncodeToString(data), nil
	case fmtBase64:
		return base64.StdEncoding.EncodeToString(data), nil
	}
	return "", fmt.Errorf("cli: format %q", f)
}

func printable(data []byte) bool {
	return utf8.Valid(data) && strings.IndexFunc(string(data), func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}

// decode reads VALUE written in format f; "-" reads standard input.
func decode(c *ucli.Context, s string) ([]byte, error) {
	f := c.String("format")
	if s == "-" {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("standard input: %w", err)
		}
		if f == fmtText {
			return b, nil // the bytes as they are
		}
		s = strings.TrimSpace(string(b))
	}
	switch f {
	case fmtText:
		return []byte(s), nil
	case fmtHex:
		b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
		if err != nil {
			return nil, badValuef("VALUE is not hex: %v", err)
		}
		return b, nil
	case fmtBase64:
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, badValuef("VALUE is not base64: %v", err)
		}
		return b, nil
	}
	return nil, usagef("--format %q: want text, hex or base64", f)
}

// size prints n bytes for people (324 KiB), or as a number with --bytes.
func size(c *ucli.Context, n uint64) string {
	if c.Bool("bytes") {
		return strconv.FormatUint(n, 10)
	}
	return humanBytes(n)
}

func humanBytes(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 && v != float64(int(v)) {
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.0f %s", v, units[i])
}

func bytesFlag() *ucli.BoolFlag {
	return &ucli.BoolFlag{Name: "bytes", Usage: "print sizes as numbers of bytes"}
}

// termWidth is the width of w when it is a terminal, else of $COLUMNS, else
// 0 (no limit).
func termWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 0
}

// truncate cuts s to width runes, ending with "... (SIZE)" so the cut shows.
func truncate(s string, width int, total int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	tail := fmt.Sprintf("... (%s, --full to see all)", humanBytes(uint64(total)))
	keep := max(width-len(tail), 8)
	i := 0
	for n := 0; n < keep && i < len(s); n++ {
		_, sz := utf8.DecodeRuneInString(s[i:])
		i += sz
	}
	return s[:i] + tail
}
