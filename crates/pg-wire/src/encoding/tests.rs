use super::*;

fn read(encoding: &str, bytes: &[u8]) -> Result<String, Undecodable> {
    let enc = ClientEncoding::by_name(encoding).expect(encoding);
    enc.decode(bytes).map(Cow::into_owned)
}

#[test]
fn every_table_has_a_character_per_position() {
    for (name, table) in tables::SINGLE_BYTE {
        assert_eq!(table.chars().count(), 128, "{name}");
    }
    for table in [
        tables::EUC_JP_JIS0208,
        tables::EUC_JP_JIS0212,
        tables::EUC_KR_KSC5601,
        tables::EUC_CN_GB2312,
    ] {
        assert_eq!(table.chars().count(), ROW * ROW);
    }
    assert_eq!(tables::EUC_JP_KANA.chars().count(), ROW);
}

/// Characters as PostgreSQL converts them, where general-purpose
/// libraries differ (LATIN1 is not windows-1252; EUC_KR is not UHC).
#[test]
fn bytes_read_as_the_server_reads_them() {
    assert_eq!(read("LATIN1", b"caf\xe9").unwrap(), "café");
    assert_eq!(read("latin1", b"\x80").unwrap(), "\u{80}");
    assert_eq!(read("WIN1252", b"\x80").unwrap(), "€");
    assert_eq!(read("ISO-8859-15", b"\xa4").unwrap(), "€");
    assert_eq!(read("LATIN5", b"\xfd").unwrap(), "ı");
    assert_eq!(read("KOI8-R", b"\xc1").unwrap(), "а");
    assert_eq!(read("WIN1251", b"\xe0").unwrap(), "а");
    assert_eq!(read("EUC_JP", b"\xa4\xa2").unwrap(), "あ");
    assert_eq!(read("EUC_JP", b"\xa1\xc1").unwrap(), "\u{ff5e}");
    assert!(read("EUC_KR", b"\x81\x41").is_err());
    assert_eq!(read("EUC_JP", b"\x8e\xb1").unwrap(), "ｱ");
    assert_eq!(read("EUC_JP", b"\x8f\xb0\xa1").unwrap(), "丂");
    assert_eq!(read("EUC_KR", b"\xb0\xa1").unwrap(), "가");
    assert_eq!(read("EUC_CN", b"\xb0\xa1").unwrap(), "啊");
    assert_eq!(
        read("EUC_JP", b"select '\xa4\xa2' from t").unwrap(),
        "select 'あ' from t"
    );
}

#[test]
fn what_the_server_refuses_is_refused() {
    // A lead byte with a quote after it: invalid, never a character.
    assert!(read("EUC_JP", b"\xa4'").is_err());
    assert!(read("EUC_KR", b"\xb0").is_err());
    assert!(read("EUC_CN", b"\x81\x40").is_err());
    // LATIN3 leaves 0xA5 unassigned.
    assert!(read("LATIN3", b"\xa5").is_err());
    assert!(read("UTF8", b"\xe9").is_err());
    let err = read("EUC_TW", b"\xa4\xa1").unwrap_err().to_string();
    assert!(
        err.contains("EUC_TW") && err.contains("only ASCII"),
        "{err}"
    );
    assert_eq!(read("EUC_TW", b"select 1").unwrap(), "select 1");
}

#[test]
fn ascii_and_utf8_are_borrowed() {
    let enc = ClientEncoding::by_name("LATIN9").unwrap();
    assert!(matches!(enc.decode(b"select 1"), Ok(Cow::Borrowed(_))));
    assert!(matches!(
        ClientEncoding::UTF8.decode("é".as_bytes()),
        Ok(Cow::Borrowed(_))
    ));
}

/// Names are cleaned as the server cleans them; encodings that can hide a
/// quote byte inside a character have no name here.
#[test]
fn names_as_the_server_accepts_them() {
    for (name, canonical) in [
        ("utf-8", "UTF8"),
        ("Unicode", "UTF8"),
        ("ISO-8859-15", "LATIN9"),
        ("windows-1251", "WIN1251"),
        ("KOI8", "KOI8R"),
        ("EUC_JP", "EUC_JP"),
        ("SQL_ASCII", "SQL_ASCII"),
    ] {
        assert_eq!(
            ClientEncoding::by_name(name).map(ClientEncoding::name),
            Some(canonical)
        );
    }
    for name in [
        "SJIS",
        "Shift_JIS",
        "BIG5",
        "GBK",
        "UHC",
        "GB18030",
        "JOHAB",
        "bogus",
    ] {
        assert_eq!(ClientEncoding::by_name(name), None, "{name}");
    }
}

/// What the gateway says reads back as what it meant, in every table;
/// what an encoding cannot hold is `?`.
#[test]
fn the_gateways_own_texts_are_written_in_the_clients_encoding() {
    for (name, text) in [
        ("LATIN1", "select on app-db/public.café denied"),
        ("WIN1251", "таблица"),
        ("KOI8U", "ґанок"),
        ("EUC_JP", "あｱ丂～"),
        ("EUC_KR", "가나"),
        ("EUC_CN", "啊"),
    ] {
        let enc = ClientEncoding::by_name(name).unwrap();
        let bytes = enc.encode(text);
        assert_eq!(enc.decode(&bytes).unwrap(), text, "{name}");
    }
    let latin1 = ClientEncoding::by_name("LATIN1").unwrap();
    assert_eq!(&*latin1.encode("a€b"), b"a?b");
    assert_eq!(&*ClientEncoding::UTF8.encode("é"), "é".as_bytes());
}
