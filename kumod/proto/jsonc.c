/* SPDX-License-Identifier: Apache-2.0 */
/* JSON comment stripping (see jsonc.h): one pass with three states. */
#include "proto/jsonc.h"

int jsonc_strip(char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		char c = s[i];
		if (c == '"') { /* a string: skip it, escapes included */
			for (i++; i < n && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
			i++;
		} else if (c == '#' || (c == '/' && i + 1 < n && s[i + 1] == '/')) {
			while (i < n && s[i] != '\n')
				s[i++] = ' ';
		} else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
			s[i] = s[i + 1] = ' ';
			i += 2;
			for (;;) {
				if (i >= n)
					return -1;
				if (s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
					s[i] = s[i + 1] = ' ';
					i += 2;
					break;
				}
				if (s[i] != '\n')
					s[i] = ' ';
				i++;
			}
		} else {
			i++;
		}
	}
	return 0;
}
