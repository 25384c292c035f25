// Package csvx is the one CSV writer of the server: every CSV it sends, to researchers or to
// coordinators, goes through it, so no cell reaches a spreadsheet as a formula.
//
// Spreadsheets (Excel, LibreOffice Calc, Google Sheets) run a cell that starts with =, +, -
// or @ as a formula, and one that starts with a tab or a carriage return may be read the same
// way once the spreadsheet strips it. A value such as =HYPERLINK("http://x","y") in an
// Organization's name would then run on the researcher's machine (CSV or formula injection).
// OWASP's advice is to prefix such a cell with a single quote, which spreadsheets show as
// text and do not evaluate (https://owasp.org/www-community/attacks/CSV_Injection).
//
// A plain decimal number (-1.5, +2, -3e-4) is left as it is: nothing but digits, one sign,
// one point and an exponent cannot call a function or refer to another cell, and a quote in
// front of it would turn every negative number into text for R, pandas and spreadsheets
// alike. Anything else starting with a sign (-1+A1, -cmd|...) is defused.
//
// Quoting and escaping are encoding/csv's (RFC 4180).
package csvx

import (
	"encoding/csv"
	"io"
	"regexp"
)

// Writer writes CSV records with every cell defused.
type Writer struct {
	w   *csv.Writer
	out io.Writer
	bom bool // the byte-order mark is still to be written
}

// NewWriter writes CSV to w; call Flush (or use WriteAll) when done.
func NewWriter(w io.Writer) *Writer { return &Writer{w: csv.NewWriter(w), out: w} }

// BOM is the UTF-8 byte-order mark.
const BOM = "\uFEFF"

// NewSpreadsheetWriter is NewWriter for a file people open in a spreadsheet: it starts with
// the UTF-8 byte-order mark, without which Excel reads a CSV file in the computer's legacy
// code page and "Universitätsklinikum" comes out as "UniversitÃ¤tsklinikum". Programs that
// read CSV (R, pandas, encoding/csv) see the mark as part of the first header: a file for
// them is written by NewWriter.
func NewSpreadsheetWriter(w io.Writer) *Writer {
	return &Writer{w: csv.NewWriter(w), out: w, bom: true}
}

// Write writes one record, each cell passed through Defuse.
func (w *Writer) Write(record []string) error {
	if w.bom {
		// Straight to the destination: nothing is buffered before the first record.
		w.bom = false
		if _, err := io.WriteString(w.out, BOM); err != nil {
			return err
		}
	}
	safe := make([]string, len(record))
	for i, cell := range record {
		safe[i] = Defuse(cell)
	}
	return w.w.Write(safe)
}

// WriteAll writes every record and flushes.
func (w *Writer) WriteAll(records [][]string) error {
	for _, r := range records {
		if err := w.Write(r); err != nil {
			return err
		}
	}
	w.w.Flush()
	return w.w.Error()
}

// Flush writes any buffered data to the underlying writer.
func (w *Writer) Flush() { w.w.Flush() }

// Error reports an error of an earlier Write or Flush.
func (w *Writer) Error() error { return w.w.Error() }

// number is a plain decimal number, which a spreadsheet reads as a value, never a formula.
var number = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

// Defuse returns cell with a single quote in front when a spreadsheet would otherwise take
// it for a formula: it starts with =, +, -, @, a tab or a carriage return, and is not a plain
// decimal number.
func Defuse(cell string) string {
	if cell == "" {
		return cell
	}
	switch cell[0] {
	case '=', '@', '\t', '\r':
		return "'" + cell
	case '+', '-':
		if number.MatchString(cell) {
			return cell
		}
		return "'" + cell
	}
	return cell
}
