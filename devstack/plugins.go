package devstack

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

// BodyLimitPlugin is the alias of caravan's body-limit middleware plugin in
// Traefik's static configuration; routes use it by that name.
const BodyLimitPlugin = "bodylimit"

// bodyLimitModule is the plugin's module name under plugins-local/src.
const bodyLimitModule = "github.com/caravanhq/bodylimit"

//go:embed all:plugin/bodylimit
var pluginFiles embed.FS

// writePlugins lays out Traefik's local plugins under dir/plugins-local
// (Traefik reads them from its working directory).
func writePlugins(dir string) error {
	dst := filepath.Join(dir, "plugins-local", "src", filepath.FromSlash(bodyLimitModule))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return fs.WalkDir(pluginFiles, "plugin/bodylimit", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := pluginFiles.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, d.Name()), b, 0o644)
	})
}
