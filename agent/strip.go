package agent

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// A task fetches the agent at every start (Nomad caches no artifact), and
// the fetch costs a cold start in proportion to its bytes: in the local
// stack about 3.5 ms a MB, 0.3 s for an 87 MB caravan built by `go build`
// (e2e TestBenchColdStart's timeline). A third of such a binary is what
// only debuggers read, never loaded: DWARF, the symbol table and the
// section headers, after the last segment. WriteTar serves an ELF
// executable without them, as `sstrip` would: the bytes up to the end of
// its last segment, its header naming no section headers. The kernel and
// the dynamic loader read program headers only, and Go's runtime reads
// its tables (pclntab: stack traces, panics, profiles) from its loaded
// segments, so the agent runs and reports the same.

// image is what WriteTar serves of an executable: header replaces the
// file's first len(header) bytes (nil: none), and size is the served
// length.
type image struct {
	header []byte
	size   int64
}

// loadedImage decides what to serve of the executable f, of size bytes:
// an ELF file up to the end of its last segment (and of its program
// headers), with e_shoff, e_shnum and e_shstrndx zeroed; any other file,
// or one with nothing after its segments, whole.
func loadedImage(f io.ReaderAt, size int64) (image, error) {
	whole := image{size: size}
	ef, err := elf.NewFile(f)
	if err != nil {
		return whole, nil // not ELF: served as it is
	}
	end := int64(0)
	for _, p := range ef.Progs {
		end = max(end, int64(p.Off+p.Filesz))
	}
	var hdrLen, phoff, phnumOff, shoffOff, shoffLen, shnumOff, shstrndxOff int64
	switch ef.Class {
	case elf.ELFCLASS64:
		hdrLen, phoff, phnumOff, shoffOff, shoffLen, shnumOff, shstrndxOff = 64, 0x20, 0x38, 0x28, 8, 0x3c, 0x3e
	case elf.ELFCLASS32:
		hdrLen, phoff, phnumOff, shoffOff, shoffLen, shnumOff, shstrndxOff = 52, 0x1c, 0x2c, 0x20, 4, 0x30, 0x32
	default:
		return whole, nil
	}
	header := make([]byte, hdrLen)
	if _, err := f.ReadAt(header, 0); err != nil {
		return image{}, fmt.Errorf("reading the ELF header: %w", err)
	}
	order := ef.ByteOrder
	var phStart int64
	if hdrLen == 64 {
		phStart = int64(order.Uint64(header[phoff:]))
	} else {
		phStart = int64(order.Uint32(header[phoff:]))
	}
	phentsize := int64(order.Uint16(header[phnumOff-2:]))
	phnum := int64(order.Uint16(header[phnumOff:]))
	end = max(end, hdrLen, phStart+phentsize*phnum)
	if len(ef.Progs) == 0 || end >= size {
		return whole, nil
	}
	clear(header[shoffOff : shoffOff+shoffLen])
	binary.LittleEndian.PutUint16(header[shnumOff:], 0) // zero either way round
	binary.LittleEndian.PutUint16(header[shstrndxOff:], 0)
	return image{header: header, size: end}, nil
}

// openImage opens the executable at path and decides what of it to serve.
func openImage(path string) (*os.File, image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, image{}, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, image{}, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, image{}, fmt.Errorf("agent binary %s is not a regular file", path)
	}
	img, err := loadedImage(f, st.Size())
	if err != nil {
		f.Close()
		return nil, image{}, fmt.Errorf("agent binary %s: %w", path, err)
	}
	return f, img, nil
}

// ServedSize is the size of the file WriteTar serves for the executable
// at path (TarSize of it is the stream's length).
func ServedSize(path string) (int64, error) {
	f, img, err := openImage(path)
	if err != nil {
		return 0, err
	}
	f.Close()
	return img.size, nil
}
