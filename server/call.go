package server

import (
	"io"
	"net/http"

	"github.com/caravanhq/caravan/jobs"
	"github.com/caravanhq/caravan/orchestrator"
)

// maxCallBody bounds what the server reads of a call's input; the
// orchestrator refuses anything over its 16 KiB limit, this only keeps a
// huge body from being read at all.
const maxCallBody = 1 << 20

// call runs a callable function: POST /v1/apps/{app}/functions/{fn}/call,
// the body being the input.
func (s *Server) call(w http.ResponseWriter, r *http.Request, caller orchestrator.Caller) {
	timeout, ok := parseTimeout(w, r.URL.Query().Get("timeout"))
	if !ok {
		return
	}
	input, err := io.ReadAll(io.LimitReader(r.Body, maxCallBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, &APIError{Kind: "bad_request", Message: "reading the input: " + err.Error()})
		return
	}
	if len(input) > maxCallBody {
		size := len(input)
		if r.ContentLength > int64(size) {
			size = int(r.ContentLength)
		}
		s.fail(w, &orchestrator.InputTooLargeError{Size: size, Limit: jobs.PayloadLimit})
		return
	}
	res, err := s.orch.Call(r.Context(), caller, orchestrator.CallRequest{AppRef: queryRef(r), Function: r.PathValue("fn"),
		Input: input, Timeout: timeout})
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
