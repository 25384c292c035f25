package fhirpath

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

type tokenKind int

const (
	tokEOF        tokenKind = iota
	tokIdentifier           // name, `delimited name`, and keywords such as "and" or "as"
	tokString               // 'text'
	tokNumber               // 12, 1.5
	tokVariable             // %resource
	tokSpecial              // $this
	tokDateTime             // @2020-01-01: recognized only to be refused clearly
	tokOperator             // . , ( ) [ ] { } | = != < > <= >= ~ !~ + - * / &
)

type token struct {
	kind tokenKind
	text string // the identifier, the string's value, the number or the operator
	pos  int    // byte offset in the expression, for error messages
}

// lex splits an expression into tokens. Comments (// and /* */) are skipped.
func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, &CompileError{Pos: i, Msg: "unterminated comment"}
			}
			i += end + 4
		case isIdentStart(c):
			start := i
			for i < len(src) && isIdentPart(src[i]) {
				i++
			}
			toks = append(toks, token{tokIdentifier, src[start:i], start})
		case c == '`':
			s, n, err := readQuoted(src, i, '`')
			if err != nil {
				return nil, err
			}
			if s == "" {
				return nil, &CompileError{Pos: i, Msg: "empty identifier"}
			}
			toks = append(toks, token{tokIdentifier, s, i})
			i += n
		case c == '\'':
			s, n, err := readQuoted(src, i, '\'')
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{tokString, s, i})
			i += n
		case c >= '0' && c <= '9':
			start := i
			for i < len(src) && isDigit(src[i]) {
				i++
			}
			if i+1 < len(src) && src[i] == '.' && isDigit(src[i+1]) {
				i++
				for i < len(src) && isDigit(src[i]) {
					i++
				}
			}
			toks = append(toks, token{tokNumber, src[start:i], start})
		case c == '%':
			start := i
			i++
			if i < len(src) && src[i] == '`' {
				s, n, err := readQuoted(src, i, '`')
				if err != nil {
					return nil, err
				}
				i += n
				toks = append(toks, token{tokVariable, s, start})
				break
			}
			for i < len(src) && isIdentPart(src[i]) {
				i++
			}
			toks = append(toks, token{tokVariable, src[start+1 : i], start})
		case c == '$':
			start := i
			i++
			for i < len(src) && isIdentPart(src[i]) {
				i++
			}
			toks = append(toks, token{tokSpecial, src[start:i], start})
		case c == '@':
			start := i
			i++
			for i < len(src) && (isIdentPart(src[i]) || strings.IndexByte("-:.+", src[i]) >= 0) {
				i++
			}
			toks = append(toks, token{tokDateTime, src[start:i], start})
		default:
			op := ""
			for _, candidate := range []string{"!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "|", "=", "<", ">", "~", "+", "-", "*", "/", "&"} {
				if strings.HasPrefix(src[i:], candidate) {
					op = candidate
					break
				}
			}
			if op == "" {
				r, _ := utf8.DecodeRuneInString(src[i:])
				return nil, &CompileError{Pos: i, Msg: fmt.Sprintf("unexpected character %q", r)}
			}
			toks = append(toks, token{tokOperator, op, i})
			i += len(op)
		}
	}
	return append(toks, token{tokEOF, "", len(src)}), nil
}

// readQuoted reads a string or delimited identifier starting at src[start] (the opening
// quote) and returns its unescaped value and its length in src.
func readQuoted(src string, start int, quote byte) (string, int, error) {
	var b strings.Builder
	i := start + 1
	for i < len(src) {
		c := src[i]
		switch {
		case c == quote:
			return b.String(), i + 1 - start, nil
		case c == '\\':
			if i+1 >= len(src) {
				return "", 0, &CompileError{Pos: i, Msg: "unterminated escape"}
			}
			i++
			switch e := src[i]; e {
			case '\'', '"', '`', '\\', '/':
				b.WriteByte(e)
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				if i+4 >= len(src) {
					return "", 0, &CompileError{Pos: i - 1, Msg: "bad \\u escape"}
				}
				r, err := strconv.ParseUint(src[i+1:i+5], 16, 16)
				if err != nil {
					return "", 0, &CompileError{Pos: i - 1, Msg: "bad \\u escape"}
				}
				b.WriteRune(rune(r))
				i += 4
			default:
				return "", 0, &CompileError{Pos: i - 1, Msg: fmt.Sprintf("unknown escape \\%c", e)}
			}
			i++
		default:
			b.WriteByte(c)
			i++
		}
	}
	return "", 0, &CompileError{Pos: start, Msg: "unterminated " + map[byte]string{'\'': "string", '`': "identifier"}[quote]}
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
