"""Checksums that separate real card numbers and IBANs from digit runs that merely look like them."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-]")
_IBAN_SHAPE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")


def luhn_valid(candidate: str) -> bool:
    """ISO/IEC 7812 check digit (Luhn) over the digits of ``candidate`` (spaces and dashes
    ignored); card numbers have 12 to 19 digits."""
    digits = _SEPARATORS.sub("", candidate)
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 mod-97 check: move the first four characters to the end, letters to numbers
    (A=10 … Z=35); a valid IBAN leaves remainder 1."""
    iban = _SEPARATORS.sub("", candidate).upper()
    if not _IBAN_SHAPE.match(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1
