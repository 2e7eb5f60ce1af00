// pgJDBC: DatabaseMetaData calls and a result set's column metadata, as
// database tools and ORMs make them.
// Run by scripts/compat/capture:
//   java -cp /usr/share/java/postgresql.jar scripts/compat/Meta.java JDBC_URL
// e.g. jdbc:postgresql://127.0.0.1:55433/app?user=postgres

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.Statement;

public class Meta {
    static int drain(ResultSet rs) throws Exception {
        int n = 0;
        try (rs) {
            while (rs.next()) {
                n++;
            }
        }
        return n;
    }

    public static void main(String[] args) throws Exception {
        String url = args.length > 0 ? args[0] : "jdbc:postgresql://127.0.0.1:55433/app?user=postgres";
        try (Connection conn = DriverManager.getConnection(url)) {
            DatabaseMetaData md = conn.getMetaData();
            System.out.println("driver: " + md.getDriverName() + " " + md.getDriverVersion());
            System.out.println("tables: " + drain(md.getTables(null, "public", "%", new String[] {"TABLE"})));
            System.out.println("columns: " + drain(md.getColumns(null, "public", "people", "%")));
            System.out.println("primary keys: " + drain(md.getPrimaryKeys(null, "public", "people")));
            System.out.println("type info: " + drain(md.getTypeInfo()));
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("select * from people")) {
                ResultSetMetaData rsmd = rs.getMetaData();
                for (int i = 1; i <= rsmd.getColumnCount(); i++) {
                    System.out.println("column " + i + ": " + rsmd.getColumnName(i)
                            + " table=" + rsmd.getTableName(i)
                            + " schema=" + rsmd.getSchemaName(i)
                            + " type=" + rsmd.getColumnTypeName(i)
                            + " class=" + rsmd.getColumnClassName(i)
                            + " nullable=" + rsmd.isNullable(i)
                            + " autoincrement=" + rsmd.isAutoIncrement(i));
                }
                int rows = 0;
                while (rs.next()) {
                    rows++;
                }
                System.out.println("rows: " + rows);
            }
        }
    }
}
