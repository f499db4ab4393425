package orchestrator

import "testing"

func TestArtifactCause(t *testing.T) {
	msg := `failed to download artifact "http://127.0.0.1:7474/v1/bundles/9f.tar?job=x&alloc=${NOMAD_ALLOC_ID}&sig=15f": getter subprocess failed: exit status 1: failed to download artifact: Get "http://127.0.0.1:7474/v1/bundles/9f.tar?alloc=b&job=x&sig=15f": dial tcp 127.0.0.1:7474: connect: connection refused`
	if got := artifactCause(msg); got != "Get <bundle URL>: dial tcp 127.0.0.1:7474: connect: connection refused" {
		t.Errorf("got %q", got)
	}
	msg = "failed to download artifact \"http://x/v1/bundles/b7.tar?sig=1\": getter subprocess failed: exit status 1: Checksums did not match for /tmp/a/archive.\nExpected: b7044320048b02e78351fb9aaa9ac57a074d6ab794deeb7573ce820c45c06c4f\nGot: 5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\n*sha256.Digest"
	if got := artifactCause(msg); got != "the bytes caravan server sent do not hash to the bundle's ID (its checksum, got sha256 5f70bf18a086): the stored bundle is damaged or was changed" {
		t.Errorf("got %q", got)
	}
}
